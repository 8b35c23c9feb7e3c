#!/usr/bin/env bash
# The floor under our numbers: server CPU per request and req/s of gunicorn (2 sync workers)
# serving (1) a bare WSGI hello-world (bench/hello_wsgi.py) and (2) our /healthz (Flask and our
# request hooks, no database work), with the same wrk load as `make bench` (2 threads, 16
# connections). Anything our server does per request costs at least (2). Run on a quiet machine.
# env: DURATION=8 (s per cell)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD PY=$PWD/.venv/bin/python DURATION=${DURATION:-8}
command -v wrk >/dev/null || { echo "floor: wrk not found: apt-get install -y wrk" >&2; exit 1; }
WORK=$(mktemp -d /tmp/idp-floor.XXXXXX) PID=""
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { local t=0 p; for p in $PID $(pgrep -P "$PID"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }

measure() {  # measure LABEL URL -- gunicorn args...
  local label=$1 url=$2; shift 3
  env "${ENVS[@]}" "$PY" -m gunicorn -w 2 "$@" >"$WORK/gunicorn.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
  wrk -t2 -c16 -d2s "$url" >/dev/null  # warm-up
  local a b out n rps hz
  a=$(ticks); out=$(wrk -t2 -c16 -d"${DURATION}s" "$url"); b=$(ticks)
  n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  hz=$(getconf CLK_TCK)
  printf '%-30s %9.1f req/s  %.3f ms server CPU per request\n' "$label" "$rps" \
    "$("$PY" -c "print(($b - $a) * 1000 / $hz / $n)")"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

ENVS=(IDP_INSTANCE_PATH="$WORK/instance" IDP_KEYS_PATH="$WORK/keys" IDP_LOG_LEVEL=WARNING)
env "${ENVS[@]}" "$ROOT/.venv/bin/idp" db upgrade >/dev/null 2>&1
PORT=$(free_port)
measure "gunicorn + hello-world WSGI" "http://127.0.0.1:$PORT/" -- --chdir "$ROOT/bench" -b "127.0.0.1:$PORT" hello_wsgi:app
PORT=$(free_port)
measure "gunicorn + idp /healthz" "http://127.0.0.1:$PORT/healthz" -- --chdir "$ROOT" -b "127.0.0.1:$PORT" wsgi:app
