// Package httpapi is the HTTP plumbing shared by Veche's APIs: handlers
// that return (response, error), one wrapper that writes JSON and Matrix
// errors, request IDs, structured access logs, metrics, CORS, body limits,
// and a router whose unknown paths and methods answer M_UNRECOGNIZED.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/mxerr"
)

// Handler serves one endpoint: it returns the value to send as JSON with
// status 200, or an error. *mxerr.Error values are sent as they are; any
// other error is logged and sent as a 500 M_UNKNOWN.
type Handler func(r *http.Request) (any, error)

// Response lets a handler choose the status code or send raw bytes.
type Response struct {
	Status      int
	Body        any    // marshalled as JSON when Raw is nil
	Raw         []byte // sent as is, with ContentType
	ContentType string
}

// RequestInfo is filled in as a request travels through the stack; the
// access log and metrics read it when the request ends.
type RequestInfo struct {
	ID     string
	Route  string // the mux pattern that matched
	UserID string // set once the request is authenticated
	Log    logrus.FieldLogger
}

type infoKey struct{}

// Info returns the request's RequestInfo (never nil inside the stack).
func Info(ctx context.Context) *RequestInfo {
	if ri, ok := ctx.Value(infoKey{}).(*RequestInfo); ok {
		return ri
	}
	return &RequestInfo{Log: logrus.StandardLogger()}
}

// Logger returns the request's logger, carrying its request ID.
func Logger(ctx context.Context) logrus.FieldLogger { return Info(ctx).Log }

// Serve adapts a Handler to net/http.
func Serve(h Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		Info(r.Context()).Route = r.Pattern
		resp, err := h(r)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		WriteResponse(w, resp)
	}
}

// WriteResponse sends a handler's successful result.
func WriteResponse(w http.ResponseWriter, resp any) {
	status := http.StatusOK
	if rr, ok := resp.(*Response); ok {
		if rr.Status != 0 {
			status = rr.Status
		}
		if rr.Raw != nil {
			w.Header().Set("Content-Type", rr.ContentType)
			w.WriteHeader(status)
			_, _ = w.Write(rr.Raw)
			return
		}
		resp = rr.Body
	}
	if resp == nil {
		resp = struct{}{}
	}
	body, err := json.Marshal(resp)
	if err != nil {
		mxerr.Internal().Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ErrorResponse is an error that knows how to send itself: *mxerr.Error,
// and the 401 of user-interactive auth.
type ErrorResponse interface {
	error
	Write(w http.ResponseWriter)
}

// WriteError sends err: Matrix errors as they are, anything else as a 500
// whose cause only goes to the log.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var re ErrorResponse
	if errors.As(err, &re) {
		re.Write(w)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
		return
	}
	Logger(r.Context()).WithError(err).Error("Request failed")
	mxerr.Internal().Write(w)
}

// ErrBodyTooLarge is reported by DecodeJSON for oversized bodies.
var errBodyTooLarge = mxerr.TooLarge("Request body is too large")

// ReadBody reads the whole request body, enforcing the limit set by
// LimitBody. The error is a Matrix error.
func ReadBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errBodyTooLarge
	}
	if err != nil {
		return nil, mxerr.Unknown("Could not read request body")
	}
	return body, nil
}

// DecodeJSON reads a JSON object body into v: M_NOT_JSON when it is not
// JSON (or not an object), M_BAD_JSON when fields have the wrong types.
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r)
	if err != nil {
		return err
	}
	return UnmarshalObject(body, v)
}

// UnmarshalObject is DecodeJSON for bytes already read.
func UnmarshalObject(body []byte, v any) error {
	trimmed := strings.TrimLeft(string(body), " \t\r\n")
	if !json.Valid(body) || !strings.HasPrefix(trimmed, "{") {
		return mxerr.NotJSON("Content not JSON.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return mxerr.BadJSON(fmt.Sprintf("Field %q has the wrong type: expected %s", te.Field, te.Type))
		}
		return mxerr.BadJSON("The JSON body does not have the expected shape")
	}
	return nil
}

// NewRequestID returns a random request ID.
func NewRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validRequestID accepts a caller's X-Request-ID only when it is short and
// plain, so that it cannot forge log lines.
func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Options configure the middleware stack.
type Options struct {
	Log     logrus.FieldLogger
	Metrics *Metrics // may be nil
	// MaxBodyBytes caps request bodies.
	MaxBodyBytes int64
	// CORS adds the headers browser clients need.
	CORS bool
	// Component labels metrics ("client", "federation", …).
	Component string
}

// Wrap puts the shared middleware around h: request ID, panic recovery,
// access log, metrics, CORS and the body limit.
func Wrap(h http.Handler, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = NewRequestID()
		}
		info := &RequestInfo{ID: id, Log: o.Log.WithField("request_id", id)}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		rec := &statusRecorder{ResponseWriter: w}
		w = rec
		w.Header().Set("X-Request-ID", id)
		if o.CORS {
			setCORS(w.Header())
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				info.Log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("Handler panicked")
				if !rec.wroteHeader {
					mxerr.Internal().Write(w)
				}
			}
			d := time.Since(start)
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			route := info.Route
			if route == "" {
				route = "unmatched"
			}
			if o.Metrics != nil {
				o.Metrics.observe(o.Component, r.Method, route, status, d)
			}
			fields := logrus.Fields{
				"method": r.Method, "path": r.URL.Path, "status": status, "duration_ms": float64(d.Microseconds()) / 1000,
				"bytes": rec.bytes, "remote": remoteHost(r.RemoteAddr),
			}
			if info.UserID != "" {
				fields["user_id"] = info.UserID
			}
			entry := info.Log.WithFields(fields)
			if status >= 500 {
				entry.Warn("Request handled")
			} else {
				entry.Info("Request handled")
			}
		}()
		if o.CORS && r.Method == http.MethodOptions {
			info.Route = "OPTIONS (CORS preflight)"
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if o.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, o.MaxBodyBytes)
		}
		h.ServeHTTP(w, r)
	})
}

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date, X-Request-ID")
	h.Set("Access-Control-Expose-Headers", "X-Request-ID, Retry-After")
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

type statusRecorder struct {
	http.ResponseWriter
	status      int
	bytes       int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// TimestampQuery reads the ts and dir query parameters of
// timestamp_to_event (client and federation alike).
func TimestampQuery(r *http.Request) (ts int64, forward bool, err error) {
	q := r.URL.Query()
	if !q.Has("ts") {
		return 0, false, mxerr.MissingParam("ts is required")
	}
	if ts, err = strconv.ParseInt(q.Get("ts"), 10, 64); err != nil {
		return 0, false, mxerr.InvalidParam("ts must be an integer")
	}
	switch q.Get("dir") {
	case "f":
		return ts, true, nil
	case "b":
		return ts, false, nil
	case "":
		return 0, false, mxerr.MissingParam("dir is required")
	}
	return 0, false, mxerr.InvalidParam("dir must be f or b")
}
