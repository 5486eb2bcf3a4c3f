#!/usr/bin/env bash
# hallpass benchmark suite. From the repository root:
#   bench/run.sh [--sqlite] [--sessions N] [--duration S] [--quick]
# Builds the release binary, starts `hallpass serve` on a throw-away Postgres database (or a
# SQLite file with --sqlite), bulk-loads users and sessions, drives the Sessions API with wrk
# (and oha for a fixed-rate point) over loopback, measures hallpass-verifier against it
# (revocation latency, verifications/s), then, with hallpass stopped, measures peers doing the
# same job (bench/peers/*.sh: Glewlwyd's refresh-token grant), runs openssl/pgbench references,
# and writes bench/RESULTS.md (bench/RESULTS-sqlite.md). Raw data: bench/out/ (gitignored).
# Traffic goes to 127.0.0.1 only and every load step is bounded in time.
set -euo pipefail

usage() {
  sed -n '2,3p' "$0" | sed 's/^# //'
  cat <<'EOF'
  --sqlite        SQLite backend (a file in a temp dir) instead of Postgres
  --sessions N    seeded sessions (default 100000; 10 per user; up to 10000000)
  --duration S    seconds per measured point (default 20), after a 5 s warm-up
  --quick         smoke test: 3 s points, 1 s warm-up, 10000 sessions, 100 revocations, 2 s
                  of verifier throughput
  Env: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432), BENCH_CONCURRENCY ("16 64"),
       BENCH_OHA (path to oha, or "none" to skip the fixed-rate point),
       BENCH_REVOCATIONS (default 1000; 0 skips the verifier measurements),
       BENCH_VERIFY_SECONDS (default 5), CARGO_TARGET_DIR (where cargo builds; default target/),
       BENCH_PEERS (peers to measure, bench/peers/<name>.sh; default "glewlwyd"; "none" skips)
EOF
}

ORIG_ARGS=("$@")
SQLITE=0
QUICK=0
SESSIONS=""
DURATION=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sqlite) SQLITE=1 ;;
    --quick) QUICK=1 ;;
    --sessions) SESSIONS="${2:?--sessions needs a number}"; shift ;;
    --sessions=*) SESSIONS="${1#*=}" ;;
    --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $QUICK == 1 ]]; then
  SESSIONS="${SESSIONS:-10000}"; DURATION="${DURATION:-3}"; WARMUP=1; JWT_POOL=200
  REVOCATIONS="${BENCH_REVOCATIONS:-100}"; VERIFY_S="${BENCH_VERIFY_SECONDS:-2}"
else
  SESSIONS="${SESSIONS:-100000}"; DURATION="${DURATION:-20}"; WARMUP=5; JWT_POOL=1000
  REVOCATIONS="${BENCH_REVOCATIONS:-1000}"; VERIFY_S="${BENCH_VERIFY_SECONDS:-5}"
fi
[[ $SESSIONS =~ ^[0-9]+$ ]] && (( SESSIONS >= 100 && SESSIONS <= 10000000 )) \
  || { echo "--sessions must be 100..10000000" >&2; exit 2; }
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 600 )) \
  || { echo "--duration must be 1..600 seconds" >&2; exit 2; }
[[ $REVOCATIONS =~ ^[0-9]+$ ]] && (( REVOCATIONS <= 100000 )) \
  || { echo "BENCH_REVOCATIONS must be 0..100000" >&2; exit 2; }
[[ $VERIFY_S =~ ^[0-9]+$ ]] && (( VERIFY_S >= 1 && VERIFY_S <= 600 )) \
  || { echo "BENCH_VERIFY_SECONDS must be 1..600" >&2; exit 2; }
(( JWT_POOL > SESSIONS )) && JWT_POOL=$SESSIONS
USERS=$(( (SESSIONS + 9) / 10 ))
read -r -a PEERS <<<"${BENCH_PEERS:-glewlwyd}"
for p in "${PEERS[@]}"; do
  [[ $p =~ ^[a-z0-9_]+$ ]] || { echo "BENCH_PEERS: \"$p\" is not a peer name (bench/peers/<name>.sh) or none" >&2; exit 2; }
done
CONCURRENCY=(${BENCH_CONCURRENCY:-16 64})
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BACKEND=$([[ $SQLITE == 1 ]] && echo sqlite || echo postgres)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH="$ROOT/bench"
# cargo runs from $ROOT, so a relative CARGO_TARGET_DIR is relative to it.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/hallpass"
VERIFIER_BENCH="$TARGET_DIR/release/examples/bench"

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- 1. tools and build
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED == 0 ]]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v wrk >/dev/null; then
  log "installing wrk (apt-get)"
  apt_install wrk
fi
command -v psql >/dev/null || { log "installing postgresql-client"; apt_install postgresql-client; }
# pgbench ships with Debian's server package (postgresql-15), which a Postgres host has.
HAVE_PGBENCH=$(command -v pgbench >/dev/null && echo 1 || echo 0)
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || apt_install "$tool"
done

OHA="${BENCH_OHA:-$(command -v oha || true)}"
[[ -z $OHA && -x "$HOME/.cargo/bin/oha" ]] && OHA="$HOME/.cargo/bin/oha"
OHA_NOTE=""
if [[ $OHA == none ]]; then
  OHA=""; OHA_NOTE="oha skipped (BENCH_OHA=none)"
elif [[ -z $OHA ]]; then
  log "installing oha from crates.io (cargo install oha --locked; a few minutes, once)"
  mkdir -p "$BENCH/out"
  if ! command -v cmake >/dev/null; then apt_install cmake || true; fi
  if cargo install oha --locked >"$BENCH/out/oha-install.log" 2>&1; then
    OHA="$HOME/.cargo/bin/oha"
  else
    OHA_NOTE="oha could not be installed (see bench/out/oha-install.log)"
    log "WARNING: $OHA_NOTE; the fixed-rate point will be reported as not measured"
  fi
fi

log "building the release binary (cargo build --release)"
cargo build --release --quiet
[[ -x $BIN ]] || die "no $BIN after the build"
# The verifier's measurements (hallpass-verifier's examples/bench.rs). Built now, before any
# load, so that neither a compile nor its failure lands in the middle of the run; a failure
# only leaves those rows "not measured".
VERIFIER_NOTE=""
mkdir -p "$BENCH/out"
if (( REVOCATIONS == 0 )); then
  VERIFIER_BENCH=""; VERIFIER_NOTE="skipped (BENCH_REVOCATIONS=0)"
else
  log "building the verifier benchmark (cargo build --release -p hallpass-verifier --example bench)"
  if ! cargo build --release --quiet -p hallpass-verifier --example bench >"$BENCH/out/verifier-build.log" 2>&1 \
      || [[ ! -x $VERIFIER_BENCH ]]; then
    VERIFIER_BENCH=""; VERIFIER_NOTE="the example did not build (see bench/out/verifier-build.log)"
    log "WARNING: $VERIFIER_NOTE; the verifier rows will be reported as not measured"
  fi
fi

# ---------------------------------------------------------------- 2. run directory, config
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_ID="${STAMP}-${BACKEND}-${SESSIONS}$([[ $QUICK == 1 ]] && echo -quick || true)"
OUT="$BENCH/out/$RUN_ID"
mkdir -p "$OUT/points"
TMP="$(mktemp -d /tmp/hallpass-bench.XXXXXX)"
META="$OUT/meta.tsv"
: >"$META"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

SERVER_PID=""
DROP_DBS=()
cleanup() {
  local rc=$?
  set +e
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null
  fi
  for db in "${DROP_DBS[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      && log "dropped database $db"
  done
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
PROJECT_UUID="$(cat /proc/sys/kernel/random/uuid)"
PROJECT_ID="project-test-$PROJECT_UUID"
SECRET="bench-$(openssl rand -hex 24)"
AUTH="Basic $(printf '%s:%s' "$PROJECT_ID" "$SECRET" | base64 -w0)"
MASTER_KEY="$(openssl rand -base64 32)"

PG_DB="no-database-of-this-run"  # measure.py charges only this database's Postgres backends
if [[ $SQLITE == 1 ]]; then
  DB_URL="$TMP/hallpass.db"
else
  psql -qAt "$PG_URL/postgres" -c 'SELECT 1' >/dev/null \
    || die "Postgres is not reachable at $PG_URL (set BENCH_PG_URL)"
  DB_NAME="hallpass_bench_$(openssl rand -hex 4)"
  psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB_NAME" >/dev/null
  DROP_DBS+=("$DB_NAME")
  DB_URL="$PG_URL/$DB_NAME"
  log "created database $DB_NAME"
  PG_DB="$DB_NAME"
fi

HP_ENV=(
  HALLPASS_LISTEN="127.0.0.1:$PORT"
  HALLPASS_DATABASE_URL="$DB_URL"
  HALLPASS_MASTER_KEY="$MASTER_KEY"
  HALLPASS_BOOTSTRAP_PROJECT_ID="$PROJECT_ID"
  HALLPASS_BOOTSTRAP_SECRET="$SECRET"
  HALLPASS_LOG=warn
)

# Starts the server and waits for GET /readyz = 200; sets SERVER_PID and READY_MS.
start_server() {
  local t0 code
  t0=$(now_ns)
  echo "=== serve at $(date -u +%FT%TZ)" >>"$OUT/server.log"
  env "${HP_ENV[@]}" "$BIN" serve >>"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE/readyz" 2>/dev/null || true)
    [[ $code == 200 ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/server.log" >&2; die "the server exited during start"; }
    (( $(now_ns) - t0 < 60000000000 )) || die "the server was not ready within 60 s"
    sleep 0.005
  done
  READY_MS=$(( ($(now_ns) - t0) / 1000000 ))
}

# SIGTERM, then wait; sets STOP_MS.
stop_server() {
  local t0
  t0=$(now_ns)
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  STOP_MS=$(( ($(now_ns) - t0) / 1000000 ))
  SERVER_PID=""
}

status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }

# ---------------------------------------------------------------- machine and versions
meta run_id "$RUN_ID"
meta backend "$BACKEND"
meta command "bench/run.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}"
meta quick "$QUICK"
meta sessions "$SESSIONS"
meta users "$USERS"
meta duration_s "$DURATION"
meta warmup_s "$WARMUP"
meta jwt_pool "$JWT_POOL"
meta revocations "$REVOCATIONS"
meta verify_seconds "$VERIFY_S"
meta concurrency "${CONCURRENCY[*]}"
meta date_utc "$(date -u +%FT%TZ)"
meta nproc "$(nproc)"
meta cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
# A VM's model name can be generic ("Intel(R) Xeon(R) Processor"): family/model/stepping say more.
meta cpu_detail "$(awk -F': *' '
  /^vendor_id/ && !v { v = $2 } /^cpu family/ && !f { f = $2 } /^model[ \t]*:/ && !m { m = $2 }
  /^stepping/ && !s { s = $2 } /^cpu MHz/ && !z { z = $2 } /^flags/ && !h { h = ($0 ~ / hypervisor( |$)/) ? "virtual machine" : "no hypervisor flag" }
  END { printf "%s, family %s, model %s, stepping %s, %.0f MHz, %s", v, f, m, s, z, h }' /proc/cpuinfo)"
meta ram "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
meta kernel "$(uname -sr)"
meta hallpass_rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src migrations verifier/src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
meta rustc "$(rustc -V)"
meta wrk "$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
meta oha "$([[ -n $OHA ]] && "$OHA" --version 2>/dev/null | head -1 || echo "${OHA_NOTE:-not installed}")"
meta openssl "$(openssl version | awk '{ print $1, $2 }')"
meta postgres "$(psql -qAt "$PG_URL/postgres" -c 'SHOW server_version' 2>/dev/null | awk '{ print $1 }' || echo unreachable)"
meta python_sqlite "$(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"

log "run $RUN_ID: $BACKEND, $SESSIONS sessions / $USERS users, ${DURATION}s points (warm-up ${WARMUP}s), port $PORT"

# ---------------------------------------------------------------- first start (migrate + bootstrap)
start_server
FIRST_READY_MS=$READY_MS
meta ready_first_ms "$FIRST_READY_MS"
log "first start (migrations, bootstrap project, key generation): ready in ${FIRST_READY_MS} ms"
stop_server
meta shutdown_first_ms "$STOP_MS"

# ---------------------------------------------------------------- 3. seed
seed_postgres() {  # $1 = database URL
  local url="$1" batch=100000 lo hi t0 t1 bulk=0
  (( SESSIONS < batch )) && batch=$SESSIONS
  batch=$(( (batch + 9) / 10 * 10 ))
  local factors='[{"type":"password","delivery_method":"knowledge","last_authenticated_at":"2026-01-01T00:00:00Z","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]'
  local now; now=$(date +%s)
  # Past a million rows, load the sessions table without its indexes and build them after
  # (same names and definitions as migrations/postgres/0001_init.sql).
  if (( SESSIONS > 1000000 )); then
    bulk=1
    psql -q -v ON_ERROR_STOP=1 "$url" <<'SQL'
ALTER TABLE sessions DROP CONSTRAINT sessions_pkey, DROP CONSTRAINT sessions_token_hash_key;
DROP INDEX sessions_user;
SQL
  fi
  t0=$(now_ns)
  for (( lo = 0; lo < SESSIONS; lo += batch )); do
    hi=$(( lo + batch )); (( hi > SESSIONS )) && hi=$SESSIONS
    psql -q -X "$url" -v project="$PROJECT_UUID" -v lo="$lo" -v hi="$hi" -v now="$now" \
      -v factors="$factors" -f "$BENCH/seed_postgres.sql" >/dev/null
    t1=$(now_ns)
    printf '  sessions: %10d/%d  (%6.1f s, %d rows/s)\n' "$hi" "$SESSIONS" \
      "$(( (t1 - t0) / 1000000 ))e-3" "$(( hi * 1000000000 / (t1 - t0 + 1) ))" >&2
  done
  if [[ $bulk == 1 ]]; then
    log "building the sessions indexes"
    psql -q -v ON_ERROR_STOP=1 "$url" <<'SQL'
SET maintenance_work_mem = '1GB';
ALTER TABLE sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
ALTER TABLE sessions ADD CONSTRAINT sessions_token_hash_key UNIQUE (token_hash);
CREATE INDEX sessions_user ON sessions (user_id, started_at);
SQL
  fi
  log "ANALYZE"
  psql -q "$url" -c 'VACUUM ANALYZE' >/dev/null
}

log "seeding $SESSIONS sessions and $USERS users"
SEED_T0=$(now_ns)
if [[ $SQLITE == 1 ]]; then
  python3 "$BENCH/seed_sqlite.py" --db "$DB_URL" --sessions "$SESSIONS" --project-uuid "$PROJECT_UUID"
  meta db_size "$(du -sh "$TMP" | cut -f1)"
else
  seed_postgres "$DB_URL"
  meta db_size "$(psql -qAt "$DB_URL" -c 'SELECT pg_size_pretty(pg_database_size(current_database()))')"
fi
SEED_S=$(( ($(now_ns) - SEED_T0) / 1000000 ))
meta seed_ms "$SEED_S"
log "seeded in $(( SEED_S / 1000 )).$(( SEED_S % 1000 / 100 )) s"

# ---------------------------------------------------------------- restart, idle footprint
start_server
meta ready_ms "$READY_MS"
log "restart on the seeded database: ready in ${READY_MS} ms (pid $SERVER_PID)"
sleep 2
meta idle_rss_kb "$(status_kb VmRSS)"
meta idle_hwm_kb "$(status_kb VmHWM)"
meta idle_threads "$(awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status")"
log "idle: VmRSS $(status_kb VmRSS) kB, VmHWM $(status_kb VmHWM) kB"

# Sanity: a seeded token authenticates, and the JWKS answers with an ETag and a 304.
curl_api() { curl -s -H "Authorization: $AUTH" -H 'Content-Type: application/json' "$@"; }
probe="$(curl_api -w '\n%{http_code}' "$BASE/v1/sessions/authenticate" \
  -d "{\"session_token\":\"bench-token-$(( SESSIONS - 1 ))\"}")"
[[ ${probe##*$'\n'} == 200 ]] || die "a seeded token does not authenticate: ${probe}"
probe="$(curl_api -w '\n%{http_code}' "$BASE/v1/sessions?user_id=user-test-beec0000-0000-4000-8000-$(printf '%012x' $(( USERS - 1 )))")"
[[ ${probe##*$'\n'} == 200 ]] || die "GET /v1/sessions for a seeded user failed: ${probe}"
ETAG="$(curl -s -D - -o /dev/null "$BASE/v1/sessions/jwks/$PROJECT_ID" | awk 'tolower($1) == "etag:" { sub(/\r$/, ""); $1 = ""; sub(/^ /, ""); print }')"
[[ -n $ETAG ]] || die "the JWKS has no ETag"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$BASE/v1/sessions/jwks/$PROJECT_ID")"
[[ $code == 304 ]] || log "WARNING: If-None-Match with the ETag answered $code, not 304"
meta jwks_etag "$ETAG"
meta jwks_bytes "$(curl -s "$BASE/v1/sessions/jwks/$PROJECT_ID" | wc -c)"

# ---------------------------------------------------------------- 4. load
export BENCH_SESSIONS="$SESSIONS" BENCH_USERS="$USERS" BENCH_AUTH="$AUTH" \
  BENCH_PROJECT="$PROJECT_ID" BENCH_ETAG="$ETAG" BENCH_JWTS="$TMP/jwts.txt"

declare -A DESC=(
  [a]="POST /v1/sessions/authenticate {session_token}"
  [b]="POST /v1/sessions/authenticate {session_token, session_duration_minutes: 60}"
  [c]="POST /v1/sessions/authenticate {session_jwt}"
  [d]="GET /v1/sessions/jwks/{project_id}"
  [d304]="GET /v1/sessions/jwks/{project_id} with If-None-Match (304)"
  [e]="POST /v1/sessions {user_id, session_duration_minutes: 60, factors}"
  [f]="GET /v1/sessions?user_id="
  [g]="POST /v1/sessions/authenticate with a new wrong secret each time (argon2id, 401/429)"
  [h]="POST /v1/sessions/authenticate {session_token}, Zipf(1.1) popularity, bursts of 4 per session"
)
declare -A MODE=([a]=token [b]=token_duration [c]=jwt [d]=jwks [d304]=jwks_304 [e]=create [f]=list [g]=wrong_secret [h]=zipf_burst)
declare -A MAXRPS=()

wrk_cmd() {  # $1 conc, $2 seconds, $3 json out
  echo wrk -t2 -c"$1" -d"$2"s --timeout 5s --latency -s "$BENCH/wrk.lua" "$BASE/"
}

point() {  # $1 workload key, $2 concurrency
  local w="$1" c="$2" f="$OUT/points/$1-c$2.json"
  BENCH_MODE="${MODE[$w]}" BENCH_OUT="$TMP/warmup.json" \
    wrk -t2 -c"$c" -d"${WARMUP}s" --timeout 5s -s "$BENCH/wrk.lua" "$BASE/" >/dev/null
  BENCH_MODE="${MODE[$w]}" BENCH_OUT="$TMP/point.json" \
    python3 "$BENCH/measure.py" --kind wrk --out "$f" --server-pid "$SERVER_PID" --pg-db "$PG_DB" \
      --wrk-json "$TMP/point.json" --stdout "$OUT/points/$w-c$c.txt" \
      --label workload="$w" --label concurrency="$c" --label tool=wrk --label mode="${MODE[$w]}" \
      -- wrk -t2 -c"$c" -d"${DURATION}s" --timeout 5s --latency -s "$BENCH/wrk.lua" "$BASE/"
  local line
  line="$(python3 "$BENCH/report.py" --point "$f")"
  log "$line"
  local rps errs
  read -r rps errs < <(python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d.get("result", {})
print(int(r.get("requests_per_sec", 0)), int(r.get("non_2xx_3xx", 0)) + int(r.get("socket_errors", 0)))
PY
)
  if (( rps > ${MAXRPS[$w]:-0} )); then MAXRPS[$w]=$rps; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -50 "$OUT/server.log" >&2; die "the server died during $w c=$c"; }
  if (( errs > 0 )) && [[ $w != g ]]; then  # (g) is refused by design
    log "  $errs errors in $w c=$c: a 2 s diagnostic run that records status codes and bodies"
    BENCH_MODE="${MODE[$w]}" BENCH_OUT="$TMP/diag.json" BENCH_DIAG=1 \
      wrk -t2 -c"$c" -d2s --timeout 5s -s "$BENCH/wrk.lua" "$BASE/" >/dev/null || true
    cp "$TMP/diag.json" "$OUT/points/$w-c$c.diag.json" 2>/dev/null || true
    cat "$TMP/diag.json" >&2 || true
  fi
}

mint_jwts() {
  log "minting a pool of $JWT_POOL session JWTs (one authenticate each)"
  python3 - "$BASE" "$AUTH" "$SESSIONS" "$JWT_POOL" "$TMP/jwts.txt" <<'PY'
import http.client, json, random, sys
base, auth, n, pool, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host, port = base.split("//")[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=10)
rng = random.Random(7)
picks = rng.sample(range(n), pool)
with open(out, "w") as f:
    for i in picks:
        body = json.dumps({"session_token": f"bench-token-{i}"})
        conn.request("POST", "/v1/sessions/authenticate", body,
                     {"Authorization": auth, "Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit(f"authenticate bench-token-{i}: {r.status} {data[:500]!r}")
        f.write(json.loads(data)["session_jwt"] + "\n")
PY
}

fixed_rate() {  # (a) at half of its measured maximum, with oha
  local rate=$(( ${MAXRPS[a]:-0} / 2 ))
  meta fixed_rate_target "$rate"
  if [[ -z $OHA ]]; then
    meta fixed_rate_note "${OHA_NOTE:-oha not installed}: not measured"
    return
  fi
  if (( rate < 1 )); then meta fixed_rate_note "no (a) maximum measured"; return; fi
  # oha sends one body: a file of request bodies (one per line) when this oha supports it,
  # otherwise a single seeded token.
  local body_args=()
  if "$OHA" --help 2>&1 | grep -q -- '-Z <BODY_PATH_LINES>'; then
    python3 -c "import random,sys; r=random.Random(11); n=int(sys.argv[1]); [print('{\"session_token\":\"bench-token-%d\"}' % r.randrange(n)) for _ in range(min(n, 200000))]" \
      "$SESSIONS" >"$TMP/bodies.txt"
    body_args=(-Z "$TMP/bodies.txt")
    meta fixed_rate_bodies "random seeded tokens (oha -Z, $(wc -l <"$TMP/bodies.txt") bodies)"
  else
    body_args=(-d "{\"session_token\":\"bench-token-$(( SESSIONS / 2 ))\"}")
    meta fixed_rate_bodies "one seeded token (this oha has no per-request bodies)"
  fi
  local json_flag=(-j)
  "$OHA" --help 2>&1 | grep -q -- '--output-format' && json_flag=(--output-format json)
  log "(a) at a fixed rate of $rate req/s with oha for ${DURATION}s (latency-corrected)"
  python3 "$BENCH/measure.py" --kind oha --out "$OUT/points/a-fixed.json" --server-pid "$SERVER_PID" --pg-db "$PG_DB" \
    --stdout "$OUT/points/a-fixed.txt" \
    --label workload=a --label concurrency=64 --label tool=oha --label rate="$rate" --label mode=token \
    -- "$OHA" --no-tui "${json_flag[@]}" -z "${DURATION}s" -q "$rate" --latency-correction -c 64 \
      -m POST -H "Authorization: $AUTH" -H 'Content-Type: application/json' "${body_args[@]}" \
      "$BASE/v1/sessions/authenticate"
  log "$(python3 "$BENCH/report.py" --point "$OUT/points/a-fixed.json")"
}

# hallpass-verifier against the running server: revocation latency over the feed's stream
# (the default transport) and long-poll (the fallback), then verifications/s on one core.
# Each step bounds itself (5 s per revocation, 10 misses in a row end it) and runs under
# `timeout` as well.
verifier_benches() {
  if [[ -z $VERIFIER_BENCH ]]; then
    meta verifier_note "$VERIFIER_NOTE"
    return
  fi
  local transport f
  for transport in auto long-poll; do
    f="$OUT/points/verifier-revocation-$transport.json"
    log "verifier: revocation latency, $REVOCATIONS sessions revoked one at a time, feed transport $transport"
    python3 "$BENCH/measure.py" --kind json --out "$f" --server-pid "$SERVER_PID" --pg-db "$PG_DB" \
      --stdout "${f%.json}.txt" \
      --label workload=revocation --label tool=verifier --label transport="$transport" \
      -- timeout 300 "$VERIFIER_BENCH" revocation-latency --transport "$transport" \
        "$BASE" "$PROJECT_ID" "$SECRET" "$REVOCATIONS"
    log "$(python3 "$BENCH/report.py" --point "$f")"
  done
  f="$OUT/points/verifier-throughput.json"
  log "verifier: verifications of one JWT for ${VERIFY_S}s on one thread"
  python3 "$BENCH/measure.py" --kind json --out "$f" --server-pid "$SERVER_PID" --pg-db "$PG_DB" \
    --stdout "${f%.json}.txt" --label workload=verify-throughput --label tool=verifier \
    -- timeout $(( VERIFY_S + 120 )) "$VERIFIER_BENCH" verify-throughput \
      "$BASE" "$PROJECT_ID" "$SECRET" "$VERIFY_S"
  log "$(python3 "$BENCH/report.py" --point "$f")"
}

log "load: workloads a h b c d d304 e f g at concurrency ${CONCURRENCY[*]} (wrk -t2)"
for w in a h b c d d304 e f g; do
  [[ $w == c ]] && mint_jwts
  for c in "${CONCURRENCY[@]}"; do
    point "$w" "$c"
  done
  [[ $w == a ]] && fixed_rate
done

sleep 2
meta after_load_rss_kb "$(status_kb VmRSS)"
meta after_load_hwm_kb "$(status_kb VmHWM)"
meta sessions_after "$(
  if [[ $SQLITE == 1 ]]; then
    python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from sessions").fetchone()[0])' "$DB_URL"
  else
    psql -qAt "$DB_URL" -c 'SELECT count(*) FROM sessions'
  fi)"
verifier_benches
meta server_log_error_lines "$(grep -ciE 'error|panic' "$OUT/server.log" || true)"
stop_server
meta shutdown_ms "$STOP_MS"
log "server stopped in ${STOP_MS} ms"

# ---------------------------------------------------------------- 5. peers
# Other software doing hallpass's job, on this machine while hallpass is stopped, with this
# run's duration, warm-up and concurrency: bench/peers/<name>.sh writes points/<name>-c<C>.json
# (measure.py documents, workload=peer-<name>), points/<name>-meta.tsv, or points/<name>-note.txt
# (one line: why it was not measured). A peer never fails the run: whatever goes wrong becomes
# a peer_<name>_note line here and "not measured" in the report. Each peer bounds its own steps
# (install, setup, every load point) in time.
run_peers() {
  local p script rc note f
  if [[ ${#PEERS[@]} == 0 || ${PEERS[*]} == none ]]; then
    meta peers_note "skipped (BENCH_PEERS=none)"
    log "peers: skipped (BENCH_PEERS=none)"
    return 0
  fi
  meta peers "${PEERS[*]}"
  for p in "${PEERS[@]}"; do
    [[ $p == none ]] && continue
    script="$BENCH/peers/$p.sh"
    if [[ ! -f $script ]]; then
      meta "peer_${p}_note" "no bench/peers/$p.sh"
      log "WARNING: peer $p: no $script"
      continue
    fi
    log "peer: $p (bench/peers/$p.sh, ${DURATION}s points after ${WARMUP}s warm-up at concurrency ${CONCURRENCY[*]}; log in points/$p-peer.log)"
    rc=0
    bash "$script" --out-dir "$OUT/points" --duration "$DURATION" --warmup "$WARMUP" \
      --concurrency "${CONCURRENCY[*]}" --pg-url "$PG_URL" 2>&1 </dev/null \
      | tee "$OUT/points/$p-peer.log" >&2 || rc=$?
    note=""
    if [[ -s $OUT/points/$p-note.txt ]]; then
      note="$(head -1 "$OUT/points/$p-note.txt" | cut -c1-500)"
      (( rc != 0 )) && note="$note (exit status $rc)"
    elif (( rc != 0 )); then
      note="bench/peers/$p.sh exited with status $rc (see points/$p-peer.log)"
    elif ! compgen -G "$OUT/points/$p-c*.json" >/dev/null; then
      note="bench/peers/$p.sh measured nothing (see points/$p-peer.log)"
    fi
    if [[ -n $note ]]; then
      meta "peer_${p}_note" "$note"
      log "WARNING: peer $p: $note"
    fi
    for f in "$OUT/points/$p"-c*.json; do
      [[ -e $f && $f != *.diag.json ]] || continue
      log "$(python3 "$BENCH/report.py" --point "$f" 2>&1 || true)"
    done
  done
  return 0
}
run_peers || meta peers_note "the peer step failed (status $?)"

# ---------------------------------------------------------------- 6. references
log "reference: openssl speed -seconds 5 -multi 2 rsa2048"
openssl speed -seconds 5 -multi 2 rsa2048 >"$OUT/openssl.txt" 2>/dev/null || true
meta openssl_sign_per_s "$(awk '/^rsa 2048 bits/ { v = $(NF-1) } END { print v }' "$OUT/openssl.txt")"
meta openssl_verify_per_s "$(awk '/^rsa 2048 bits/ { v = $NF } END { print v }' "$OUT/openssl.txt")"

run_pgbench() {  # $1 url, $2 label, $3 database name
  local url="$1" label="$2" dbname="$3"
  cat >"$TMP/pgbench-update.sql" <<EOF
\\set i random(0, $(( SESSIONS - 1 )))
UPDATE sessions SET last_accessed_at = extract(epoch from now())::bigint WHERE token_hash = sha256(convert_to('bench-token-' || :i, 'UTF8')) RETURNING id, user_id, expires_at, authentication_factors, roles, custom_claims;
EOF
  cat >"$TMP/pgbench-select.sql" <<EOF
\\set i random(0, $(( SESSIONS - 1 )))
SELECT s.id, s.started_at, s.last_accessed_at, s.expires_at, s.revoked_at, s.ip_address, s.user_agent, s.authentication_factors, s.roles, s.custom_claims, u.id, u.external_id, u.email_id, u.email, u.email_verified, u.first_name, u.middle_name, u.last_name, u.trusted_metadata, u.untrusted_metadata, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = sha256(convert_to('bench-token-' || :i, 'UTF8')) AND s.project_id = '$PROJECT_UUID';
EOF
  for kind in update select; do
    log "reference: pgbench ($kind by token hash, $label) -c 16 -j 2 -T $DURATION"
    python3 "$BENCH/measure.py" --kind pgbench --out "$OUT/points/pgbench-$kind.json" --pg-db "$dbname" \
      --stdout "$OUT/points/pgbench-$kind.txt" --label workload="pgbench-$kind" --label concurrency=16 \
      --label tool=pgbench --label database="$label" \
      -- pgbench -n -M prepared -c 16 -j 2 -T "$DURATION" -f "$TMP/pgbench-$kind.sql" "$url"
    log "$(python3 "$BENCH/report.py" --point "$OUT/points/pgbench-$kind.json")"
  done
}

if [[ $HAVE_PGBENCH == 0 ]]; then
  meta pgbench_note "n/a (pgbench is not installed)"
elif [[ $SQLITE == 0 ]]; then
  run_pgbench "$DB_URL" "the seeded benchmark database" "$DB_NAME"
elif psql -qAt "$PG_URL/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
  # A temporary Postgres database with the same schema and the same seeded rows.
  REF_DB="hallpass_bench_ref_$(openssl rand -hex 4)"
  psql -q "$PG_URL/postgres" -c "CREATE DATABASE $REF_DB" >/dev/null
  DROP_DBS+=("$REF_DB")
  log "pgbench reference on a temporary Postgres copy ($REF_DB)"
  env HALLPASS_DATABASE_URL="$PG_URL/$REF_DB" HALLPASS_LOG=warn "$BIN" migrate >/dev/null
  psql -q "$PG_URL/$REF_DB" -c "INSERT INTO projects (id, live, name, created_at) VALUES ('$PROJECT_UUID', false, 'bench', $(date +%s))" >/dev/null
  seed_postgres "$PG_URL/$REF_DB"
  run_pgbench "$PG_URL/$REF_DB" "a temporary Postgres copy with the same rows" "$REF_DB"
else
  meta pgbench_note "n/a (no Postgres reachable at $PG_URL)"
fi

meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 7. report
python3 "$BENCH/report.py" --run "$OUT" --bench "$BENCH"
