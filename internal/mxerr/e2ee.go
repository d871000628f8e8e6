package mxerr

import "net/http"

// InvalidSignature is M_INVALID_SIGNATURE (spec: cross-signing uploads):
// a key or signature does not verify.
func InvalidSignature(msg string) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_SIGNATURE", msg)
}
