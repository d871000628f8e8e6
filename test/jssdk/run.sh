#!/usr/bin/env bash
# End-to-end story with matrix-js-sdk against a freshly built and started
# veche: build, start on a free loopback port in a temp dir, wait for
# /versions, install the pinned SDK (npm ci, only when needed), run
# story.mjs, and always stop veche and clean up. Exits non-zero on any
# failure and then prints veche's log.
#
#   bash test/jssdk/run.sh
#
# Environment:
#   JSSDK_TIMEOUT  seconds the whole story may take (default 120)
#   JSSDK_VERBOSE  1 to print every HTTP request the SDK makes
#   JSSDK_KEEP     1 to keep the temp dir (config, database, log)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/veche-jssdk.XXXXXX")"
veche_pid=""
story_pid=""
status=1

log() { echo "jssdk: $*"; }

stop_veche() {
  [ -n "$veche_pid" ] || return 0
  if kill -0 "$veche_pid" 2>/dev/null; then
    kill -TERM "$veche_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$veche_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$veche_pid" 2>/dev/null; then
      log "veche (pid $veche_pid) did not stop within 15s of SIGTERM; killing it"
      kill -KILL "$veche_pid" 2>/dev/null || true
    fi
  fi
  wait "$veche_pid" 2>/dev/null || true
  veche_pid=""
}

cleanup() {
  local rc=$?
  [ "$status" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
  if [ -n "$story_pid" ]; then
    kill -TERM "$story_pid" 2>/dev/null || true
    wait "$story_pid" 2>/dev/null || true
  fi
  stop_veche
  if [ "$rc" -ne 0 ] && [ -f "$tmp/veche.log" ]; then
    echo "===== veche log ($tmp/veche.log) ====="
    cat "$tmp/veche.log"
    echo "===== end of veche log ====="
  fi
  if [ "${JSSDK_KEEP:-}" = 1 ]; then
    log "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  if [ "$rc" -ne 0 ]; then
    log "FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)

# --- build
log "building veche"
(cd "$root" && go build -o "$tmp/veche" ./cmd/veche)

# --- start on a free port: veche binds 127.0.0.1:0 and logs the address.
log "starting veche in $tmp"
(
  cd "$tmp"
  exec ./veche serve --config "$tmp/veche.yaml" \
    --listen-client 127.0.0.1:0 \
    --listen-federation 127.0.0.1:0 \
    --database-url sqlite://veche.db \
    --set registration.enabled=true \
    --set rate_limits.enabled=false \
    --set log.format=text
) >"$tmp/veche.log" 2>&1 </dev/null &
veche_pid=$!

addr=""
for _ in $(seq 1 300); do
  if ! kill -0 "$veche_pid" 2>/dev/null; then
    log "veche exited during start-up"
    exit 1
  fi
  # text format: msg="Veche is listening" client="127.0.0.1:PORT" (quoted
  # or not, depending on the logrus version); json: "client":"127.0.0.1:PORT"
  line="$(grep -m1 'Veche is listening' "$tmp/veche.log" || true)"
  if [ -n "$line" ]; then
    addr="$(printf '%s\n' "$line" | sed -nE 's/.*"?client"?[=:]"?([^" ]+)"?.*/\1/p')"
    break
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  log "veche did not log 'Veche is listening' with client=ADDR within 30s"
  exit 1
fi
base="http://$addr"
log "veche is listening on $base"

ready=""
for _ in $(seq 1 100); do
  if curl -fsS --max-time 2 -o /dev/null "$base/_matrix/client/versions" 2>/dev/null; then
    ready=1
    break
  fi
  kill -0 "$veche_pid" 2>/dev/null || { log "veche exited before answering /versions"; exit 1; }
  sleep 0.1
done
if [ -z "$ready" ]; then
  log "GET $base/_matrix/client/versions did not answer 200 within 10s"
  exit 1
fi

# --- install the SDK, only when node_modules is missing or out of date
stamp="$here/node_modules/.veche-lock.sha256"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
else
  log "node_modules up to date; skipping npm ci"
fi

# --- the story (in the background, so a signal to this script is handled
# at once instead of after node exits)
log "running story.mjs"
(cd "$here" && exec timeout --kill-after=5 "${JSSDK_TIMEOUT:-120}" node story.mjs "$base") &
story_pid=$!
story_rc=0
wait "$story_pid" || story_rc=$?
story_pid=""
if [ "$story_rc" -ne 0 ]; then
  [ "$story_rc" -eq 124 ] && log "story.mjs timed out after ${JSSDK_TIMEOUT:-120}s"
  exit "$story_rc"
fi

# --- veche must still be up, shut down cleanly, and not have panicked
kill -0 "$veche_pid" 2>/dev/null || { log "veche died during the story"; exit 1; }
kill -TERM "$veche_pid"
veche_rc=0
for _ in $(seq 1 150); do
  kill -0 "$veche_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$veche_pid" 2>/dev/null; then
  log "veche did not shut down within 15s of SIGTERM"
  exit 1
fi
wait "$veche_pid" || veche_rc=$?
veche_pid=""
if [ "$veche_rc" -ne 0 ]; then
  log "veche exited with status $veche_rc on SIGTERM"
  exit 1
fi
if grep -qE '^panic:|level=panic|level=fatal|DATA RACE' "$tmp/veche.log"; then
  log "veche's log shows a panic or race"
  exit 1
fi

status=0
log "passed in $(($(date +%s) - start))s"
