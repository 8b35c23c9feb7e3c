#!/usr/bin/env bash
# `make test`: the whole suite on the embedded default (SQLite + SQL store), then on real
# PostgreSQL and Redis started here on loopback and stopped by PID at the end.
# Exit status: non-zero if either run fails; pytest's "no tests collected" (5) is a failure.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
bash .ci/deps.sh test

if [[ -f tests/interop/package.json && ! -d tests/interop/node_modules ]]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

WORK=$(mktemp -d /tmp/idp-test.XXXXXX)
chmod 755 "$WORK"
REDIS_PID="" PG_DATA=""
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cleanup() {
  local rc=$?
  if [[ -n $REDIS_PID ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill "$REDIS_PID" || true
    for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || \
      kill "$(head -1 "$PG_DATA/postmaster.pid")" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

start_redis() {
  local port; port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$WORK/redis.pid" \
    --dir "$WORK" --logfile "$WORK/redis.log" --save '' --appendonly no
  for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  REDIS_PID=$(cat "$WORK/redis.pid")
  TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

start_postgres() {
  local port; port=$(free_port)
  install -d -o postgres -g postgres "$WORK/pg"   # initdb runs as postgres and needs to own its dir
  PG_DATA=$WORK/pg/data
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/pg.log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $WORK/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE idp LOGIN PASSWORD 'idp'" -c "CREATE DATABASE idp_test OWNER idp"
  TEST_DATABASE_URL="postgresql+psycopg://idp:idp@127.0.0.1:$port/idp_test"
}

start_redis
start_postgres
echo "services: redis pid $REDIS_PID, postgres $(head -1 "$PG_DATA/postmaster.pid")"

FAILED=0
SUITE=0
run_suite() {  # run_suite LABEL ENV...
  local label=$1 rc=0; shift
  SUITE=$((SUITE + 1))
  echo "=== pytest: $label"
  # A private --basetemp: pytest otherwise prunes old numbered temp dirs under /tmp, which
  # deletes the files of another pytest session still running on the same machine.
  env "$@" "$PY" -m pytest -q --basetemp "$WORK/pytest-$SUITE" "${PYTEST_ARGS[@]}" || rc=$?
  if ((rc == 5)); then echo "pytest ($label): no tests collected"; fi
  if ((rc != 0)); then FAILED=1; echo "pytest ($label) failed with exit $rc"; fi
}
read -r -a PYTEST_ARGS <<<"${PYTEST_ARGS:-}"
# The embedded pass still gets Redis for the shared store suite (every backend, every pass).
run_suite "embedded: SQLite + SQL store" IDP_TEST_REDIS_URL="$TEST_REDIS_URL" IDP_TEST_BACKEND=embedded
run_suite "PostgreSQL + Redis" IDP_TEST_DATABASE_URL="$TEST_DATABASE_URL" IDP_TEST_REDIS_URL="$TEST_REDIS_URL" \
  IDP_TEST_BACKEND=services
exit $FAILED
