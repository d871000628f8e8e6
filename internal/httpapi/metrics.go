package httpapi

import (
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the server's Prometheus registry and HTTP instruments. It
// is created per server (no global registry), so tests can run several.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the HTTP instruments plus Go and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "veche", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by component, method, route and status code.",
		}, []string{"component", "method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "veche", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency by component, method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"component", "method", "route"}),
	}
	reg.MustRegister(m.requests, m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RegisterDBStats exports connection pool statistics for each named pool.
func (m *Metrics) RegisterDBStats(pools map[string]*sql.DB) {
	for name, db := range pools {
		m.Registry.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
}

func (m *Metrics) observe(component, method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(component, method, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(component, method, route).Observe(d.Seconds())
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
