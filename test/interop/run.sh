#!/usr/bin/env bash
# Builds Dendrite (another Matrix homeserver, Apache-2.0) from the Go
# module proxy into a cache directory, once, and runs Veche's interop
# tests against it: joins, messages, backfill and invites both ways.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=v0.13.8
bin="${VECHE_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/veche-interop}/dendrite-$version"
if [ ! -x "$bin/dendrite" ] || [ ! -x "$bin/generate-config" ] || [ ! -x "$bin/generate-keys" ]; then
	echo "interop: building Dendrite $version into $bin"
	mkdir -p "$bin"
	tmp=$(mktemp -d)
	# Outside this module, so Dendrite builds with its own dependencies.
	(cd "$tmp" && GOFLAGS=-mod=mod GOBIN="$bin" go install \
		"github.com/matrix-org/dendrite/cmd/dendrite@$version" \
		"github.com/matrix-org/dendrite/cmd/generate-config@$version" \
		"github.com/matrix-org/dendrite/cmd/generate-keys@$version")
	rm -rf "$tmp"
fi
VECHE_DENDRITE="$bin" go test -count=1 ./test/interop/ "$@"
