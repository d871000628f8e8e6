package mxerr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

func TestIsComparesErrcodes(t *testing.T) {
	wrapped := fmt.Errorf("context: %w", Forbidden("you may not"))
	if !errors.Is(wrapped, Forbidden("")) {
		t.Fatal("wrapped M_FORBIDDEN not recognised")
	}
	if errors.Is(wrapped, NotFound("")) {
		t.Fatal("M_FORBIDDEN matched M_NOT_FOUND")
	}
}

func TestWithCopies(t *testing.T) {
	base := UnknownToken("gone", false)
	soft := base.With("soft_logout", true)
	if base.Extra["soft_logout"] != nil {
		t.Fatal("With changed the original")
	}
	body, _ := json.Marshal(soft)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	if m["errcode"] != "M_UNKNOWN_TOKEN" || m["error"] != "gone" || m["soft_logout"] != true {
		t.Fatalf("body = %s", body)
	}
}

func TestLimitExceeded(t *testing.T) {
	rec := httptest.NewRecorder()
	LimitExceeded(1500 * time.Millisecond).Write(rec)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	var m map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	if m["retry_after_ms"] != float64(1500) || m["errcode"] != "M_LIMIT_EXCEEDED" {
		t.Fatalf("body = %s", rec.Body)
	}
}
