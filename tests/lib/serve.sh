# shellcheck shell=bash disable=SC2034 # STOPPED_RC and SERVER_PID are for the caller
# Shared plumbing of tests/schema/run.sh and tests/sdk/run.sh: a `hallpass serve` on a free
# loopback port. Sourced, never run; it only defines functions (no options set, nothing
# started), so the caller's `set -euo pipefail` and traps stay as they are. Needs python3
# (free_port) and curl (wait_ready). Messages start with `run.sh:`, as the callers' own do.
#
#   free_port
#       Prints a free TCP port on 127.0.0.1 (one the kernel just handed out and released).
#   stop PID
#       Stops a process the caller started in the background: SIGTERM, up to 5 s for it to
#       exit, then SIGKILL; then reaps it. Its exit status goes to the global STOPPED_RC (0
#       when PID is empty, or when the status could not be collected). Always returns 0, so
#       it is safe in EXIT traps and under `set -e`.
#   start_hallpass BIN LOG PORT DATABASE_URL MASTER_KEY PROJECT_ID SECRET USERINFO_URL [NAME=VALUE ...]
#       Starts `BIN serve` in the background, stdout and stderr to LOG, with
#       HALLPASS_LISTEN=127.0.0.1:PORT, HALLPASS_DATABASE_URL, HALLPASS_MASTER_KEY,
#       HALLPASS_BOOTSTRAP_PROJECT_ID, HALLPASS_BOOTSTRAP_SECRET and
#       HALLPASS_BOOTSTRAP_USERINFO_URL set from the arguments, plus any NAME=VALUE given
#       after them (e.g. HALLPASS_LOG_FORMAT=json); the caller's own environment is not
#       changed. Sets the global SERVER_PID to the server's own pid (so an EXIT trap can
#       `stop` it) and returns at once; returns 2, starting nothing, on fewer than 8
#       arguments or an extra one that is not NAME=VALUE.
#   wait_ready URL PID
#       Polls GET URL/readyz (2 s per request, every 0.1 s) until it answers 200, for at most
#       30 s. Returns 0 when ready; returns 1 with a message on stderr when PID exits first
#       ("hallpass exited before it was ready") or after 30 s ("hallpass not ready after
#       30 s"). The caller decides what a failure does (both callers: `|| exit 1`).

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop() {
  local pid=$1
  STOPPED_RC=0
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || STOPPED_RC=$?
}

start_hallpass() {
  local usage="run.sh: start_hallpass BIN LOG PORT DATABASE_URL MASTER_KEY PROJECT_ID SECRET USERINFO_URL [NAME=VALUE ...]"
  if [[ $# -lt 8 ]]; then
    echo "$usage" >&2
    return 2
  fi
  local bin=$1 log=$2 port=$3 database_url=$4 master_key=$5 project_id=$6 secret=$7 userinfo_url=$8
  shift 8
  local extra
  for extra in "$@"; do
    [[ $extra =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "$usage: not NAME=VALUE: $extra" >&2; return 2; }
  done
  # env execs the server, so $! is the server's own pid (stop signals it directly).
  env HALLPASS_LISTEN="127.0.0.1:$port" \
    HALLPASS_DATABASE_URL="$database_url" \
    HALLPASS_MASTER_KEY="$master_key" \
    HALLPASS_BOOTSTRAP_PROJECT_ID="$project_id" \
    HALLPASS_BOOTSTRAP_SECRET="$secret" \
    HALLPASS_BOOTSTRAP_USERINFO_URL="$userinfo_url" \
    "$@" "$bin" serve >"$log" 2>&1 &
  SERVER_PID=$!
}

wait_ready() {
  local url=$1 pid=$2 deadline
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: hallpass exited before it was ready" >&2
      return 1
    fi
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/readyz" || true) == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
  echo "run.sh: hallpass not ready after 30 s" >&2
  return 1
}
