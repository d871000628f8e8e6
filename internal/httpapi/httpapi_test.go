package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/mxerr"
)

func TestUnmarshalObject(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	tests := []struct {
		in      string
		errcode string
	}{
		{`{"name":"x","count":2}`, ""},
		{`  {"name":"x"}`, ""},
		{`{}`, ""},
		{``, "M_NOT_JSON"},
		{`not json`, "M_NOT_JSON"},
		{`{"name":`, "M_NOT_JSON"},
		{`[1,2]`, "M_NOT_JSON"},
		{`"string"`, "M_NOT_JSON"},
		{`null`, "M_NOT_JSON"},
		{`{"name":5}`, "M_BAD_JSON"},
		{`{"count":"five"}`, "M_BAD_JSON"},
		{`{"count":1.5}`, "M_BAD_JSON"},
	}
	for _, tt := range tests {
		var b body
		err := UnmarshalObject([]byte(tt.in), &b)
		var me *mxerr.Error
		switch {
		case tt.errcode == "" && err != nil:
			t.Errorf("UnmarshalObject(%q) = %v, want success", tt.in, err)
		case tt.errcode != "" && (!errors.As(err, &me) || me.ErrCode != tt.errcode):
			t.Errorf("UnmarshalObject(%q) = %v, want %s", tt.in, err, tt.errcode)
		}
	}
}

func newTestStack(t *testing.T) http.Handler {
	rt := NewRouter()
	rt.Handle("GET /things/{id}", Serve(func(r *http.Request) (any, error) {
		return map[string]string{"id": r.PathValue("id"), "route": Info(r.Context()).Route}, nil
	}))
	rt.Handle("POST /things/{id}", Serve(func(r *http.Request) (any, error) {
		var v map[string]any
		if err := DecodeJSON(r, &v); err != nil {
			return nil, err
		}
		return &Response{Status: http.StatusCreated, Body: v}, nil
	}))
	rt.Handle("GET /fail", Serve(func(r *http.Request) (any, error) { return nil, errors.New("database on fire") }))
	rt.Handle("GET /panic", Serve(func(r *http.Request) (any, error) { panic("boom") }))
	rt.Handle("GET /forbidden", Serve(func(r *http.Request) (any, error) { return nil, mxerr.Forbidden("no") }))
	log := logrus.New()
	log.SetOutput(io.Discard)
	return Wrap(rt, Options{Log: log, MaxBodyBytes: 64, CORS: true, Component: "test"})
}

func TestStack(t *testing.T) {
	h := newTestStack(t)
	tests := []struct {
		method, path, body string
		status             int
		errcode            string
		check              func(t *testing.T, body map[string]any)
	}{
		{method: "GET", path: "/things/%40a%3Ab", status: 200, check: func(t *testing.T, b map[string]any) {
			if b["id"] != "@a:b" || b["route"] != "GET /things/{id}" {
				t.Errorf("body = %v", b)
			}
		}},
		{method: "POST", path: "/things/1", body: `{"a":1}`, status: 201},
		{method: "POST", path: "/things/1", body: `{"a":"` + strings.Repeat("x", 100) + `"}`, status: 413, errcode: "M_TOO_LARGE"},
		{method: "DELETE", path: "/things/1", status: 405, errcode: "M_UNRECOGNIZED"},
		{method: "GET", path: "/nothing", status: 404, errcode: "M_UNRECOGNIZED"},
		{method: "GET", path: "/fail", status: 500, errcode: "M_UNKNOWN", check: func(t *testing.T, b map[string]any) {
			if strings.Contains(b["error"].(string), "fire") {
				t.Error("internal error details leaked to the client")
			}
		}},
		{method: "GET", path: "/panic", status: 500, errcode: "M_UNKNOWN"},
		{method: "GET", path: "/forbidden", status: 403, errcode: "M_FORBIDDEN"},
		{method: "OPTIONS", path: "/anything", status: 204},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			if rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("X-Request-ID") == "" {
				t.Errorf("missing CORS or request ID headers: %v", rec.Header())
			}
			if tt.status == 204 {
				return
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %q", rec.Body)
			}
			if got, _ := body["errcode"].(string); got != tt.errcode {
				t.Fatalf("errcode = %q, want %q", got, tt.errcode)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
}
