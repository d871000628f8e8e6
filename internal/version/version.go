// Package version holds the release version, shared by the binary and by
// the federation version endpoint.
package version

// Version is the release version, set at build time with
// -ldflags "-X github.com/veche/veche/internal/version.Version=…".
var Version = "0.1.0-dev"
