#!/usr/bin/env bash
# Instructions per authenticate, outside the RSA signature: a noise-free measure of the
# server's own overhead. From the repository root:
#   bench/instructions.sh [BINARY] [REQUESTS]
# Runs `hallpass serve` (default target/release/hallpass, built if missing) under valgrind's
# callgrind on a throw-away Postgres database seeded with 10,000 sessions, sends 300 warm-up
# authenticates by token over one kept-alive connection, zeroes the counters, sends REQUESTS
# more (default 1000), and prints instructions per request: in all, inside
# `SigningKey::signature_b64` (the RSA signature), and the rest.
#
# Why: CPU time on a shared VM varies by ±5 % from one minute to the next, more than the
# changes worth making to the code around the signature; instruction counts do not vary
# (callgrind counts the same for the same binary and requests, whatever else the machine
# does). They are not time: valgrind emulates no AVX-512, so its signature takes another
# path than on the machine, and a memory copy counts a byte per instruction. Use it to
# compare two builds, and the load points of run.sh for time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/hallpass}"
REQUESTS="${2:-1000}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
[[ $REQUESTS =~ ^[0-9]+$ ]] && (( REQUESTS >= 100 && REQUESTS <= 100000 )) \
  || { echo "REQUESTS must be 100..100000" >&2; exit 2; }
log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v valgrind >/dev/null || {
  log "installing valgrind (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
if [[ ! -x $BIN ]]; then
  log "building the release binary"
  cargo build --release --quiet
fi

TMP="$(mktemp -d /tmp/hallpass-instructions.XXXXXX)"
DB="hallpass_instr_$(openssl rand -hex 4)"
PID=""
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PROJECT_UUID="$(cat /proc/sys/kernel/random/uuid)"
PROJECT_ID="project-test-$PROJECT_UUID"
SECRET="bench-$(openssl rand -hex 24)"
psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
ENV=(
  HALLPASS_LISTEN="127.0.0.1:$PORT" HALLPASS_DATABASE_URL="$PG_URL/$DB"
  HALLPASS_MASTER_KEY="$(openssl rand -base64 32)" HALLPASS_BOOTSTRAP_PROJECT_ID="$PROJECT_ID"
  HALLPASS_BOOTSTRAP_SECRET="$SECRET" HALLPASS_LOG=warn
)
ready() {  # waits up to $1 seconds for /readyz
  local i
  for (( i = 0; i < $1 * 10; i++ )); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && return 0
    kill -0 "$PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

log "first start (migrations, bootstrap project, keys)"
env "${ENV[@]}" "$BIN" serve >"$TMP/server.log" 2>&1 & PID=$!
ready 60 || { cat "$TMP/server.log" >&2; exit 1; }
kill "$PID"; wait "$PID" || true; PID=""
FACTORS='[{"type":"password","delivery_method":"knowledge","last_authenticated_at":"2026-01-01T00:00:00Z","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}]'
psql -q -X "$PG_URL/$DB" -v project="$PROJECT_UUID" -v lo=0 -v hi=10000 -v now="$(date +%s)" \
  -v factors="$FACTORS" -f bench/seed_postgres.sql >/dev/null
psql -q "$PG_URL/$DB" -c 'VACUUM ANALYZE' >/dev/null

log "serving under callgrind"
env "${ENV[@]}" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p.out" "$BIN" serve \
  >"$TMP/server.log" 2>&1 & PID=$!
ready 120 || { cat "$TMP/server.log" >&2; exit 1; }

client() {  # $1 requests: authenticate by token, one kept-alive connection, seeded sessions
  python3 - "$PORT" "$1" "$PROJECT_ID" "$SECRET" <<'PY'
import base64, http.client, json, random, sys
port, n, project, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
auth = "Basic " + base64.b64encode(f"{project}:{secret}".encode()).decode()
conn, rnd, bad = http.client.HTTPConnection("127.0.0.1", port, timeout=60), random.Random(7), 0
for _ in range(n):
    body = json.dumps({"session_token": f"bench-token-{rnd.randrange(10000)}"})
    conn.request("POST", "/v1/sessions/authenticate", body,
                 {"Authorization": auth, "Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    bad += r.status != 200
sys.exit(f"{bad} of {n} requests failed" if bad else 0)
PY
}
client 300
callgrind_control -z "$PID" >/dev/null 2>&1
log "measuring $REQUESTS requests"
client "$REQUESTS"
callgrind_control -d "$PID" >/dev/null 2>&1
kill "$PID"; wait "$PID" || true; PID=""
OUT="$(ls "$TMP"/cg.*.out.1 2>/dev/null | head -1)"
[[ -n $OUT ]] || { log "callgrind wrote no dump"; exit 1; }
total=$(callgrind_annotate "$OUT" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
sign=$(callgrind_annotate --inclusive=yes "$OUT" \
  | awk '/SigningKey::signature_b64 \[/ && !done { gsub(",", "", $1); print $1; done = 1 }')
printf 'binary %s, %d requests\n' "$BIN" "$REQUESTS"
printf 'instructions per request: %d in all, %d in the RSA signature, %d outside it\n' \
  $(( total / REQUESTS )) $(( ${sign:-0} / REQUESTS )) $(( (total - ${sign:-0}) / REQUESTS ))
