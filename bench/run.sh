#!/usr/bin/env bash
# `make bench`: our server under gunicorn (2 sync workers, as in production) side by side with the
# peer node-oidc-provider from ../shared/peers (2 processes + Redis), same load generator (wrk with
# ../shared/peers/bench.sh and bench.lua), loopback only, alternating rounds (ours, peer, ours, ...),
# never both servers at once. Prints one table: medians over rounds, errors summed, ratio ours/peer,
# the argon2id bound for logins, gunicorn RSS after load and the issue-3 targets.
# Without ../shared/peers it benchmarks our server alone (with an identical built-in wrk script).
#
# env: ROUNDS=3 DURATION=10 (s per endpoint cell) CONNS=16 (wrk connections, may be a list "16 64")
#      THREADS=2 (wrk threads) WARMUP=1 (s per endpoint before each server's round, not counted)
#      LOGIN_CONNS=$CONNS LOGIN_DURATION=$DURATION LOGIN_COUNT=5000 (logins.py bounds)
#      RSS_IDLE_WAIT=3 (s after the load before RSS is read a second time)
#      BENCH_BACKEND=embedded|redis|postgres  (SQLite + SQL store | SQLite + private Redis |
#                                              throwaway PostgreSQL cluster + private Redis)
#      BENCH_PEER=auto|0  BENCH_IDP_ENV=production  PEERS_DIR=../shared/peers  BENCH_KEEP=1 (keep temp dir)
#      BENCH_QUIET_WAIT=20 (s to wait before each round while other processes use >15 % of the CPUs; 0 = off)
#      BENCH_GUNICORN_ARGS="--preload" BENCH_SERVER_ENV="MALLOC_ARENA_MAX=2"  (experiments; printed in the table)
# Defaults take about 6-9 minutes (more on a busy machine: see BENCH_QUIET_WAIT). Every process started here is stopped by PID on exit.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
IDP=$ROOT/.venv/bin/idp
PEERS=${PEERS_DIR:-$ROOT/../shared/peers}
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; CONNS=${CONNS:-16}; THREADS=${THREADS:-2}
WARMUP=${WARMUP:-1}
LOGIN_CONNS=${LOGIN_CONNS:-${CONNS%% *}}; LOGIN_DURATION=${LOGIN_DURATION:-$DURATION}
LOGIN_COUNT=${LOGIN_COUNT:-5000}
RSS_IDLE_WAIT=${RSS_IDLE_WAIT:-3}
BACKEND=${BENCH_BACKEND:-embedded}
IDP_ENV_BENCH=${BENCH_IDP_ENV:-production}
T_START=$(date +%s)

die() { echo "bench: $*" >&2; exit 1; }
[[ -x $PY ]] || die "no virtualenv at .venv (run: make install)"
command -v wrk >/dev/null || die "wrk not found: apt-get install -y wrk"
command -v curl >/dev/null || die "curl not found"
case $BACKEND in embedded|redis|postgres) ;; *) die "BENCH_BACKEND must be embedded, redis or postgres";; esac
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"

WORK=$(mktemp -d /tmp/idp-bench.XXXXXX)
chmod 755 "$WORK"
GUNI_PID="" REDIS_PID="" PG_DATA="" PEER_PID="" PEER_KIDS="" PEER_REDIS_PID=""
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)

stop_pid() {  # stop_pid PID [grace-seconds]: TERM, wait, then KILL; only this PID
  local pid=$1 grace=${2:-10}
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_ours() { stop_pid "$GUNI_PID" 35; GUNI_PID=""; }

stop_peer() {
  [[ -n $PEER_PID ]] || return 0
  stop_pid "$PEER_PID" 10
  local k; for k in $PEER_KIDS; do stop_pid "$k" 5; done
  # run.sh's pid file, only if it still names our process
  if [[ -f $PEERS/oidc-provider/run/oidc-provider.pid && $(cat "$PEERS/oidc-provider/run/oidc-provider.pid") == "$PEER_PID" ]]; then
    rm -f "$PEERS/oidc-provider/run/oidc-provider.pid"
  fi
  PEER_PID="" PEER_KIDS=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_ours
  stop_peer
  stop_pid "$PEER_REDIS_PID" 5
  stop_pid "$REDIS_PID" 5
  if [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || \
      kill "$(head -1 "$PG_DATA/postmaster.pid")" 2>/dev/null || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "bench: kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" bench/tools.py free-port; }

start_redis() {  # start_redis NAME -> sets STARTED_REDIS_PID, STARTED_REDIS_PORT (flags as peers/redis_ctl.sh)
  local name=$1 port; port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$WORK/$name.pid" --dir "$WORK" \
    --save '' --appendonly no --logfile "$WORK/$name.log" --protected-mode yes >/dev/null
  for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  STARTED_REDIS_PID=$(cat "$WORK/$name.pid"); STARTED_REDIS_PORT=$port
}

start_postgres() {  # as .ci/test.sh: throwaway cluster on loopback, durability off
  [[ -n $PGBIN ]] || die "PostgreSQL not installed (BENCH_BACKEND=postgres)"
  local port; port=$(free_port)
  install -d -o postgres -g postgres "$WORK/pg"
  PG_DATA=$WORK/pg/data
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/pg.log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $WORK/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE idp LOGIN PASSWORD 'idp'" -c "CREATE DATABASE idp_bench OWNER idp"
  DB_URL="postgresql+psycopg://idp:idp@127.0.0.1:$port/idp_bench"
}

# --- the load generator ---------------------------------------------------------------------------
# The peer's bench.sh/bench.lua when present; otherwise an identical copy of bench.lua, so that the
# numbers of a solo run are comparable with a side-by-side one.
if [[ -f $PEERS/bench.lua ]]; then
  LUA=$PEERS/bench.lua
else
  LUA=$WORK/bench.lua
  cat >"$LUA" <<'EOF'
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
local label = os.getenv("BENCH_LABEL") or "-"
wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
wrk.headers["Accept"] = "application/json"
function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT label=%s requests=%d rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f non2xx=%d sock_err=%d timeouts=%d\n",
    label, summary.requests, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect + e.read + e.write, e.timeout))
end
EOF
fi

wrk_cell() {  # wrk_cell NAME LABEL URL CONNS METHOD BODY AUTH DURATION -> prints a line, appends CSV
  local name=$1 label=$2 url=$3 c=$4 t=$THREADS out row
  ((c < t)) && t=$c
  out=$(BENCH_LABEL="$label" BENCH_METHOD="$5" BENCH_BODY="$6" BENCH_AUTH="$7" \
    timeout --kill-after=5 $(($8 + 30)) wrk -t"$t" -c"$c" -d"${8}s" --timeout 10s -s "$LUA" "$url" 2>&1) || true
  row=$("$PY" bench/tools.py wrkrow "$name" "$c" <<<"$out")
  if [[ -z $row ]]; then echo "wrk failed for $label c=$c: $(tail -3 <<<"$out")"; return 0; fi
  IFS=, read -r _ _ _ rps p50 _ p99 mx n2 se to <<<"$row"
  printf '%-12s %5s %10s %9s %9s %9s %8s %8s\n' "$label" "$c" "$rps" "$p50" "$p99" "$mx" "$n2" "$((se + to))"
  if [[ $name != warmup ]]; then echo "$row" >>"$WORK/results.csv"; fi
  return 0
}

disc_field() { "$PY" -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }

SRV_PIDS=""
srv_ticks() { "$PY" bench/tools.py cpu-ticks $SRV_PIDS; }

measure() {  # measure NAME ENDPOINT CONNS CMD...: runs CMD; records the CPU ticks the server(s) used meanwhile
  local name=$1 ep=$2 c=$3 a b; shift 3
  if [[ $name == warmup || -z $SRV_PIDS ]]; then "$@"; return 0; fi
  a=$(srv_ticks)
  "$@"
  b=$(srv_ticks)
  echo "$name,$ep,$c,$((b - a))" >>"$WORK/cpu.csv"
}

bench_sh_cell() {  # bench_sh_cell NAME BASE CID SECRET ENDPOINT CONNS DURATION RESOURCE FIRST
  local csv=$WORK/results.csv out
  [[ $1 == warmup ]] && csv=/dev/null
  out=$(NAME="$1" CSV="$csv" DURATION="$7" CONNS="$6" THREADS="$THREADS" ENDPOINTS="$5" \
    SCOPE=api:read RESOURCE="$8" bash "$PEERS/bench.sh" "$2" "$3" "$4" 2>&1) || out+=$'\n'"bench.sh failed for $1 $5"
  [[ $1 == warmup ]] && return 0
  if [[ $9 == 1 ]]; then echo "$out"; else grep -v '^# bench:\|^endpoint ' <<<"$out" || true; fi
}

load_endpoints() {  # load_endpoints NAME BASE CID SECRET ENDPOINTS DURATION [RESOURCE]
  local name=$1 base=$2 cid=$3 secret=$4 eps=$5 dur=$6 resource=${7:-} ep c first=1
  if [[ -f $PEERS/bench.sh ]]; then  # one bench.sh call per cell, so that each cell gets its server CPU
    for ep in $eps; do for c in $CONNS; do
      measure "$name" "${ep/token_jwt/token}" "$c" bench_sh_cell "$name" "$base" "$cid" "$secret" "$ep" "$c" "$dur" "$resource" "$first"
      first=0
    done; done
    return 0
  fi
  # built-in equivalent of bench.sh (same wrk script, same cells)
  local disc tok_url jwks_url intro_url auth tok
  disc=$(curl -fsS --max-time 5 "$base/.well-known/openid-configuration") || { echo "no discovery at $base"; return 0; }
  tok_url=$(disc_field token_endpoint <<<"$disc"); jwks_url=$(disc_field jwks_uri <<<"$disc")
  intro_url=$(disc_field introspection_endpoint <<<"$disc")
  auth="Basic $(printf '%s:%s' "$cid" "$secret" | base64 -w0)"
  [[ $name != warmup ]] && printf '%-12s %5s %10s %9s %9s %9s %8s %8s\n' endpoint conns req/s p50_ms p99_ms max_ms non2xx sockerr
  for ep in $eps; do for c in $CONNS; do
    case $ep in
      token|token_jwt)
        measure "$name" token "$c" wrk_cell "$name" token "$tok_url" "$c" POST \
          "grant_type=client_credentials&scope=api:read${resource:+&resource=$resource}" "$auth" "$dur" ;;
      introspect)
        tok=$(curl -fsS --max-time 30 -H "Authorization: $auth" -d grant_type=client_credentials -d scope=api:read \
          "$tok_url" | disc_field access_token) || true
        measure "$name" introspect "$c" wrk_cell "$name" introspect "$intro_url" "$c" POST "token=$tok&token_type_hint=access_token" "$auth" "$dur" ;;
      jwks) measure "$name" jwks "$c" wrk_cell "$name" jwks "$jwks_url" "$c" GET "" "" "$dur" ;;
      discovery) measure "$name" discovery "$c" wrk_cell "$name" discovery "$base/.well-known/openid-configuration" "$c" GET "" "" "$dur" ;;
    esac
  done; done
  return 0
}

tag() {  # tag SERVER ROUND < json -> json with server/round added
  "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); d.update(server=sys.argv[1], round=int(sys.argv[2])); print(json.dumps(d))' "$@"
}

wait_http() {  # wait_http URL PID SECONDS
  for _ in $(seq $(($3 * 10))); do
    curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

code_hash() { (cd "$ROOT" && find idp migrations templates wsgi.py -type f \( -name '*.py' -o -name '*.html' \) -print0 \
  | sort -z | xargs -0 cat | sha1sum | cut -c1-12); }
CODE_HASH=$(code_hash)
check_code() {  # our server is restarted every round: say so if its code changed under the bench
  local h; h=$(code_hash)
  if [[ $h != "$CODE_HASH" ]]; then
    echo "WARNING: idp code changed since the bench started ($CODE_HASH -> $h): results mix two versions"
    echo "round $1: code $h (started with $CODE_HASH)" >>"$WORK/code_changes.txt"
  fi
}

# --- our server: data in a temp instance -------------------------------------------------------------
PORT=$(free_port)
OURS_URL=http://127.0.0.1:$PORT
DB_URL="" R_URL=""
case $BACKEND in
  redis) start_redis ours-redis; REDIS_PID=$STARTED_REDIS_PID; R_URL=redis://127.0.0.1:$STARTED_REDIS_PORT/0 ;;
  postgres) start_postgres; start_redis ours-redis; REDIS_PID=$STARTED_REDIS_PID
            R_URL=redis://127.0.0.1:$STARTED_REDIS_PORT/0 ;;
esac
SECRET_KEY_BENCH=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
KEK_BENCH=$("$PY" -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())')
# DATABASE_URL/REDIS_URL are set even when empty, so that a .env file cannot change the backend.
OURS_ENV=(IDP_ENV="$IDP_ENV_BENCH" IDP_ISSUER="$OURS_URL" DATABASE_URL="$DB_URL" REDIS_URL="$R_URL"
          IDP_INSTANCE_PATH="$WORK/instance" IDP_KEYS_PATH="$WORK/keys" SECRET_KEY="$SECRET_KEY_BENCH"
          IDP_KEY_ENCRYPTION_KEY="$KEK_BENCH"
          # The load comes from one IP: per-IP limits raised out of reach (not 0, so the counting still runs).
          IDP_LOGIN_RATE_LIMIT=1000000000 IDP_TOKEN_RATE_LIMIT=1000000000)
mkdir -p "$WORK/instance" "$WORK/keys"
(umask 077; printf "%q " export "${OURS_ENV[@]}" >"$WORK/ours.env")  # for debugging with BENCH_KEEP=1
ours() { env "${OURS_ENV[@]}" "$@"; }

echo "bench: setting up our server ($BACKEND) in $WORK"
ours "$IDP" db upgrade >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; die "idp db upgrade failed"; }
if [[ $(ours "$IDP" keys list --json 2>>"$WORK/setup.log") == "[]" ]]; then
  ours "$IDP" keys rotate --immediate --json >>"$WORK/setup.log" 2>&1 || die "idp keys rotate failed"
fi
CLIENT_ID=bench-client
REDIRECT_URI=http://127.0.0.1:9/cb
CJSON=$(ours "$IDP" clients create --name bench --client-id "$CLIENT_ID" --redirect-uri "$REDIRECT_URI" \
  --grant-type client_credentials --grant-type authorization_code --grant-type refresh_token \
  --scope "openid profile email api:read" --skip-consent --json 2>>"$WORK/setup.log") \
  || { cat "$WORK/setup.log"; die "idp clients create failed"; }
CLIENT_SECRET=$(disc_field client_secret <<<"$CJSON")
[[ -n $CLIENT_SECRET ]] || die "no client_secret in: $CJSON"
USER_EMAIL=bench-user@example.com
USER_PW=pw-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
ours "$IDP" users create --email "$USER_EMAIL" --password="$USER_PW" --verified --name "Bench User" --json \
  >>"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; die "idp users create failed"; }


# --- the peer --------------------------------------------------------------------------------------------
PEER=0 PEER_NOTE=""
if [[ ${BENCH_PEER:-auto} == 0 ]]; then PEER_NOTE="BENCH_PEER=0"
elif [[ ! -x $PEERS/oidc-provider/run.sh ]]; then PEER_NOTE="$PEERS absent"
elif ! command -v node >/dev/null || ! command -v redis-server >/dev/null; then PEER_NOTE="node or redis-server missing"
elif [[ -f $PEERS/oidc-provider/run/oidc-provider.pid ]] && kill -0 "$(cat "$PEERS/oidc-provider/run/oidc-provider.pid")" 2>/dev/null; then
  PEER_NOTE="a peer started by someone else is running (pid $(cat "$PEERS/oidc-provider/run/oidc-provider.pid")): not touching it"
else
  PEER=1
  if [[ ! -d $PEERS/oidc-provider/node_modules/oidc-provider ]]; then
    echo "bench: installing the peer (../shared/peers/oidc-provider/setup.sh)"
    "$PEERS/oidc-provider/setup.sh" >"$WORK/peer-setup.log" 2>&1 || { PEER=0; PEER_NOTE="peer setup.sh failed"; }
  fi
fi
PEER_CID=bench-client PEER_SECRET=bench-secret-0123456789abcdef PEER_RESOURCE=urn:bench:api
if ((PEER)); then
  start_redis peer-redis; PEER_REDIS_PID=$STARTED_REDIS_PID
  PEER_REDIS_URL=redis://127.0.0.1:$STARTED_REDIS_PORT/0
  PEER_PORT=$(free_port); PEER_URL=http://127.0.0.1:$PEER_PORT
  PEER_VERSION=$(node -p "require('$PEERS/oidc-provider/node_modules/oidc-provider/package.json').version" 2>/dev/null || echo '?')
fi

start_peer() {
  local out
  out=$(OP_PORT=$PEER_PORT OP_ADAPTER=redis OP_WORKERS=2 REDIS_URL=$PEER_REDIS_URL "$PEERS/oidc-provider/run.sh" 2>&1) \
    || { echo "peer failed to start: $out"; return 1; }
  PEER_PID=$(tail -1 <<<"$out")
  [[ $PEER_PID =~ ^[0-9]+$ ]] || { echo "peer: unexpected run.sh output: $out"; PEER_PID=""; return 1; }
  wait_http "$PEER_URL/.well-known/openid-configuration" "$PEER_PID" 20 || { echo "peer not answering"; return 1; }
  sleep 0.5  # both cluster workers listening
  PEER_KIDS=$(ps -o pid= --ppid "$PEER_PID" | tr -s ' \n' ' ')
}

start_ours() {
  # shellcheck disable=SC2086  # BENCH_GUNICORN_ARGS / BENCH_SERVER_ENV: for experiments only (shown in the table)
  env "${OURS_ENV[@]}" ${BENCH_SERVER_ENV:-} "$PY" -m gunicorn --chdir "$ROOT" -w 2 -b "127.0.0.1:$PORT" \
    ${BENCH_GUNICORN_ARGS:-} wsgi:app >>"$WORK/gunicorn.log" 2>&1 &
  GUNI_PID=$!
  wait_http "$OURS_URL/healthz" "$GUNI_PID" 30 || { tail -20 "$WORK/gunicorn.log"; die "our server did not start"; }
  sleep 0.5  # both workers booted
}

B_BACKEND=$BACKEND B_ROUNDS=$ROUNDS B_DURATION=$DURATION B_CONNS=$CONNS B_THREADS=$THREADS B_PEER=$PEER \
B_PEER_NOTE=$PEER_NOTE B_ENV=$IDP_ENV_BENCH B_LOGIN_CONNS=$LOGIN_CONNS B_LOGIN_DURATION=$LOGIN_DURATION \
B_PEER_VERSION=${PEER_VERSION:-?} B_EXTRA="${BENCH_GUNICORN_ARGS:-} ${BENCH_SERVER_ENV:-}" "$PY" - "$WORK/meta.json" <<'EOF'
import json, os, sys, time
e = os.environ
json.dump({
    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "backend": e["B_BACKEND"],
    "rounds": int(e["B_ROUNDS"]), "duration": e["B_DURATION"], "conns": e["B_CONNS"], "threads": e["B_THREADS"],
    "cpus": os.cpu_count(), "loadavg": "/".join(open("/proc/loadavg").read().split()[:3]),
    "ours_desc": f"gunicorn -w 2 (sync) wsgi:app{(' [extra: ' + e['B_EXTRA'].strip() + ']') if e['B_EXTRA'].strip() else ''}, IDP_ENV={e['B_ENV']}, backend={e['B_BACKEND']}; token = "
                 "client_credentials (RS256 JWT); introspection of that JWT; userinfo with a user token from one "
                 f"login; logins: {e['B_LOGIN_CONNS']} workers (bench/logins.py) for {e['B_LOGIN_DURATION']}s",
    "peer": e["B_PEER"] == "1", "peer_note": e["B_PEER_NOTE"],
    "peer_desc": f"node-oidc-provider {e['B_PEER_VERSION']} (../shared/peers), OP_ADAPTER=redis OP_WORKERS=2; "
                 "token = token_jwt (resource=urn:bench:api, RS256 at+jwt); introspection of an opaque "
                 "client_credentials token (Redis lookup)",
    "peer_skip": {"userinfo": "n/a: no user token (peer refuses client_credentials tokens at /me)",
                  "logins": "n/a: peer has no login/consent UI (devInteractions off)"},
}, open(sys.argv[1], "w"))
EOF

bench_pids() {  # every long-lived process of this bench (the rest is reaped by this script: cutime)
  local p="$$ $GUNI_PID $REDIS_PID $PEER_REDIS_PID $PEER_PID $PEER_KIDS"
  [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]] && p+=" $(head -1 "$PG_DATA/postmaster.pid")"
  echo $p
}

wait_quiet() {  # on a shared machine: wait up to BENCH_QUIET_WAIT s for other processes to calm down
  ((${BENCH_QUIET_WAIT:-20} > 0)) || return 0
  local q; q=$("$PY" bench/tools.py wait-quiet $(bench_pids) --max "${BENCH_QUIET_WAIT:-20}")
  echo "quiet check (other processes' share of the CPUs): $q"
}
noise_start() { "$PY" bench/tools.py cpu-snap $(bench_pids) >"$WORK/snap-a.json"; }
noise_end() {  # noise_end SERVER ROUND: CPU used by processes outside the bench during the round
  "$PY" bench/tools.py cpu-snap $(bench_pids) >"$WORK/snap-b.json"
  local n; n=$("$PY" bench/tools.py cpu-other "$WORK/snap-a.json" "$WORK/snap-b.json")
  echo "other processes on this machine during the round: $n"
  echo "$n" | tag "$1" "$2" >>"$WORK/noise.jsonl"
}

round_ours() {
  local r=$1
  echo; echo "=== round $r/$ROUNDS: ours ($OURS_URL, gunicorn -w 2, $BACKEND)  loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  check_code "$r"
  start_ours
  SRV_PIDS="$GUNI_PID $REDIS_PID"
  [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]] && SRV_PIDS+=" $(head -1 "$PG_DATA/postmaster.pid")"
  wait_quiet
  noise_start
  local probe; probe=$(ours "$PY" bench/tools.py probe --base "$OURS_URL" --client-id "$CLIENT_ID" --client-secret="$CLIENT_SECRET" 2>&1 || true)
  echo "probe: $probe"
  echo "$probe" | tag ours "$r" >>"$WORK/probes.jsonl" 2>/dev/null || true
  if ((WARMUP > 0)); then
    load_endpoints warmup "$OURS_URL" "$CLIENT_ID" "$CLIENT_SECRET" "token introspect jwks discovery" "$WARMUP"
  fi
  load_endpoints "ours#$r" "$OURS_URL" "$CLIENT_ID" "$CLIENT_SECRET" "token introspect jwks discovery" "$DURATION"
  # userinfo: a user's access token from one complete login, then wrk with the same bench.lua
  local utok ui_url c
  utok=$("$PY" bench/logins.py --base "$OURS_URL" --client-id "$CLIENT_ID" --client-secret="$CLIENT_SECRET" \
    --email "$USER_EMAIL" --password="$USER_PW" --redirect-uri "$REDIRECT_URI" --mint-token 2>"$WORK/mint.log") || {
    utok=$(cat "$WORK/mint.log")
    echo "userinfo: not measured (no user token: $(tail -1 <<<"$utok"))"; utok=""; }
  if [[ -n $utok ]]; then
    ui_url=$(curl -fsS --max-time 5 "$OURS_URL/.well-known/openid-configuration" | disc_field userinfo_endpoint || true)
    ui_url=${ui_url:-$OURS_URL/userinfo}
    for c in $CONNS; do
      if ((WARMUP > 0)); then wrk_cell warmup userinfo "$ui_url" "$c" GET "" "Bearer $utok" "$WARMUP" >/dev/null; fi
      measure "ours#$r" userinfo "$c" wrk_cell "ours#$r" userinfo "$ui_url" "$c" GET "" "Bearer $utok" "$DURATION"
    done
  fi
  echo "logins: $LOGIN_CONNS workers, up to ${LOGIN_DURATION}s / $LOGIN_COUNT logins"
  local lj a b
  a=$(srv_ticks)
  lj=$("$PY" bench/logins.py --base "$OURS_URL" --client-id "$CLIENT_ID" --client-secret="$CLIENT_SECRET" \
    --email "$USER_EMAIL" --password="$USER_PW" --redirect-uri "$REDIRECT_URI" --workers "$LOGIN_CONNS" \
    --count "$LOGIN_COUNT" --duration "$LOGIN_DURATION" --json 2>&1 | tail -1) || true
  b=$(srv_ticks)
  echo "logins: $lj"
  echo "ours#$r,logins,$LOGIN_CONNS,$((b - a))" >>"$WORK/cpu.csv"
  if [[ $lj == \{* ]]; then echo "$lj" | tag ours "$r" >>"$WORK/logins.jsonl"; fi
  noise_end ours "$r"
  local rss; rss=$("$PY" bench/tools.py rss "$GUNI_PID")
  echo "rss: $rss"
  echo "$rss" | tag ours "$r" >>"$WORK/rss.jsonl"
  # And once the workers have been idle for a moment (idp/memory.py gives the hash buffers back).
  sleep "$RSS_IDLE_WAIT"
  rss=$("$PY" bench/tools.py rss "$GUNI_PID")
  echo "rss after ${RSS_IDLE_WAIT}s idle: $rss"
  echo "$rss" | tag ours "$r" >>"$WORK/rss_idle.jsonl"
  stop_ours
}

round_peer() {
  local r=$1
  echo; echo "=== round $r/$ROUNDS: peer ($PEER_URL, node-oidc-provider $PEER_VERSION, 2 workers + Redis)  loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  start_peer || { stop_peer; return 0; }
  SRV_PIDS="$PEER_PID $PEER_KIDS $PEER_REDIS_PID"
  wait_quiet
  noise_start
  local probe; probe=$("$PY" bench/tools.py probe --base "$PEER_URL" --client-id "$PEER_CID" --client-secret="$PEER_SECRET" \
    --resource "$PEER_RESOURCE" 2>&1 || true)
  echo "probe: $probe"
  if ((WARMUP > 0)); then
    load_endpoints warmup "$PEER_URL" "$PEER_CID" "$PEER_SECRET" "token_jwt introspect jwks discovery" "$WARMUP" "$PEER_RESOURCE"
  fi
  load_endpoints "peer#$r" "$PEER_URL" "$PEER_CID" "$PEER_SECRET" "token_jwt introspect jwks discovery" "$DURATION" "$PEER_RESOURCE"
  noise_end peer "$r"
  local rss; rss=$("$PY" bench/tools.py rss "$PEER_PID")
  echo "rss: $rss"
  echo "$rss" | tag peer "$r" >>"$WORK/rss.jsonl"
  stop_peer
}

echo "bench: measuring one argon2id hash with our parameters"
wait_quiet
ours "$PY" bench/tools.py hashbound --n 10 >"$WORK/hash.json"

for r in $(seq "$ROUNDS"); do
  round_ours "$r"
  if ((PEER)); then round_peer "$r"; fi
done

echo
echo "=============================================================================================="
"$PY" bench/report.py "$WORK"
echo "(wall time $(( $(date +%s) - T_START )) s)"
mkdir -p bench/results
cp "$WORK/table.txt" bench/results/latest.txt
cp "$WORK/results.csv" bench/results/latest.csv 2>/dev/null || true
