// Package mxerr defines Matrix API errors as values: an errcode, the HTTP
// status it travels with, a human-readable message and optional extra fields
// (retry_after_ms, soft_logout, …). Handlers return them; the HTTP layer
// writes them. errors.Is compares errcodes, so wrapped errors still match.
package mxerr

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"time"
)

// Error is a Matrix standard error response.
type Error struct {
	Status  int
	ErrCode string
	Message string
	// Extra holds additional top-level fields of the error body.
	Extra map[string]any
	// Header holds response headers to send with the error (Retry-After).
	Header http.Header
}

func (e *Error) Error() string { return e.ErrCode + ": " + e.Message }

// Is reports whether target is a *Error with the same errcode.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.ErrCode == e.ErrCode
	}
	return false
}

// With returns a copy of e with an extra body field set.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = maps.Clone(e.Extra)
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra[key] = value
	return &c
}

// MarshalJSON renders the error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, len(e.Extra)+2)
	maps.Copy(body, e.Extra)
	body["errcode"] = e.ErrCode
	body["error"] = e.Message
	return json.Marshal(body)
}

// Write sends the error as an HTTP response.
func (e *Error) Write(w http.ResponseWriter) {
	for k, vs := range e.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	body, _ := e.MarshalJSON()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func newErr(status int, code, msg string) *Error {
	return &Error{Status: status, ErrCode: code, Message: msg}
}

// Constructors, one per errcode the server emits. Each returns a new value.

func Forbidden(msg string) *Error    { return newErr(http.StatusForbidden, "M_FORBIDDEN", msg) }
func Unknown(msg string) *Error      { return newErr(http.StatusBadRequest, "M_UNKNOWN", msg) }
func Unrecognized(msg string) *Error { return newErr(http.StatusNotFound, "M_UNRECOGNIZED", msg) }
func BadJSON(msg string) *Error      { return newErr(http.StatusBadRequest, "M_BAD_JSON", msg) }
func NotJSON(msg string) *Error      { return newErr(http.StatusBadRequest, "M_NOT_JSON", msg) }
func NotFound(msg string) *Error     { return newErr(http.StatusNotFound, "M_NOT_FOUND", msg) }
func MissingParam(msg string) *Error { return newErr(http.StatusBadRequest, "M_MISSING_PARAM", msg) }
func InvalidParam(msg string) *Error { return newErr(http.StatusBadRequest, "M_INVALID_PARAM", msg) }
func TooLarge(msg string) *Error     { return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", msg) }
func MissingToken(msg string) *Error { return newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", msg) }
func UserInUse(msg string) *Error    { return newErr(http.StatusBadRequest, "M_USER_IN_USE", msg) }
func InvalidUsername(msg string) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_USERNAME", msg)
}
func Exclusive(msg string) *Error    { return newErr(http.StatusBadRequest, "M_EXCLUSIVE", msg) }
func WeakPassword(msg string) *Error { return newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", msg) }
func GuestAccessForbidden(msg string) *Error {
	return newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", msg)
}
func Unauthorized(msg string) *Error { return newErr(http.StatusUnauthorized, "M_UNAUTHORIZED", msg) }
func ProfileTooLarge(msg string) *Error {
	return newErr(http.StatusBadRequest, "M_PROFILE_TOO_LARGE", msg)
}
func KeyTooLarge(msg string) *Error { return newErr(http.StatusBadRequest, "M_KEY_TOO_LARGE", msg) }

// UnknownToken is the answer to an access token the server does not know.
// softLogout tells the client it may refresh or re-login keeping its data.
func UnknownToken(msg string, softLogout bool) *Error {
	e := newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", msg)
	if softLogout {
		e = e.With("soft_logout", true)
	}
	return e
}

// MethodNotAllowed is sent for a known path with an unsupported method.
func MethodNotAllowed() *Error {
	return newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request")
}

// LimitExceeded is the rate-limit error, with the wait in the body (spec)
// and in a Retry-After header (RFC 9110, which newer clients prefer).
func LimitExceeded(retryAfter time.Duration) *Error {
	ms := retryAfter.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	e := newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests").With("retry_after_ms", ms)
	secs := (ms + 999) / 1000
	e.Header = http.Header{"Retry-After": []string{strconv.FormatInt(secs, 10)}}
	return e
}

// Internal is the generic 500; the cause goes to the log, never to the client.
func Internal() *Error {
	return newErr(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
}

// Unavailable is used when a dependency such as the database is down.
func Unavailable(msg string) *Error {
	return newErr(http.StatusServiceUnavailable, "M_UNKNOWN", msg)
}

// Conflict is a 409: what the request would create already exists (spec:
// a room alias that is taken answers 409 M_UNKNOWN).
func Conflict(msg string) *Error { return newErr(http.StatusConflict, "M_UNKNOWN", msg) }
func UnsupportedRoomVersion(msg string) *Error {
	return newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", msg)
}

// IncompatibleRoomVersion answers make_join/make_knock from a server that
// does not support the room's version; the version travels in the body.
func IncompatibleRoomVersion(version string) *Error {
	return newErr(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Your server does not support room version "+version).
		With("room_version", version)
}
