#!/usr/bin/env bash
# Runs the official Stytch SDK suites (Node `stytch`, Python `stytch`) against a real
# hallpass server.
#
#   tests/sdk/run.sh DATABASE_URL
#
# DATABASE_URL: a SQLite file path (e.g. /tmp/sdk/hallpass.db; its folder is created) or a
# ready postgres://… URL. The caller creates and drops the database.
# HALLPASS_BIN: the binary to test (default: target/debug/hallpass under the repo root).
# SDK_SUITES:   which suites to run, default "node python".
# Before the suites, policy.json (next to this script) is made the project's RBAC policy with
# `hallpass rbac set` (same database and master key as the server), and two trusted auth
# token profiles are made with `hallpass token-profile create` for a fresh EC P-256 key; the
# suites get ATTEST_PROFILE_ID (jit provisioning), ATTEST_PROFILE_ID_NO_JIT,
# ATTEST_PRIVATE_KEY_FILE (PKCS#8 PEM), ATTEST_ISSUER and ATTEST_AUDIENCE.
# HALLPASS_MASTER_KEY: used when set; otherwise a fresh one is made, so a database can be
#               reused by a later run only when the same HALLPASS_MASTER_KEY is passed again
#               (the server cannot open the private keys of a ring sealed under another key).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DATABASE_URL" >&2
  exit 2
fi
DATABASE_URL=$1

SDK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SDK_DIR/../.." && pwd)
HALLPASS_BIN=${HALLPASS_BIN:-$REPO_ROOT/target/debug/hallpass}
[[ $HALLPASS_BIN = /* ]] || HALLPASS_BIN=$REPO_ROOT/$HALLPASS_BIN
SDK_SUITES=${SDK_SUITES:-node python}
# free_port, stop, start_hallpass, wait_ready (`shellcheck -x` follows it; SC1091 is its
# "not following" note when run without -x).
# shellcheck source=SCRIPTDIR/../lib/serve.sh disable=SC1091
source "$REPO_ROOT/tests/lib/serve.sh"

if [[ ! -x $HALLPASS_BIN ]]; then
  echo "run.sh: no hallpass binary at $HALLPASS_BIN (build it, or set HALLPASS_BIN)" >&2
  exit 2
fi
for tool in node npm python3 curl openssl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done

# ---------------------------------------------------------------- SDK installs (pinned)
PY_DIR=$SDK_DIR/python
VENV=$PY_DIR/.venv
REQ_SUM=$(sha256sum "$PY_DIR/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$REQ_SUM" ]]; then
  echo "# creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PY_DIR/requirements.txt"
  echo "$REQ_SUM" >"$VENV/.requirements.sha256"
fi

NODE_DIR=$SDK_DIR/node
LOCK_SUM=$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)
if [[ ! -d $NODE_DIR/node_modules/stytch || "$(cat "$NODE_DIR/node_modules/.lock.sha256" 2>/dev/null)" != "$LOCK_SUM" ]]; then
  echo "# npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$LOCK_SUM" >"$NODE_DIR/node_modules/.lock.sha256"
fi

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hallpass-sdk.XXXXXX")
USERINFO_PID=""
SERVER_PID=""
cleanup() {
  local rc=$?
  stop "$SERVER_PID"
  stop "$USERINFO_PID"
  if [[ $rc -ne 0 && -f $WORK/hallpass.log ]]; then
    echo "# last lines of the hallpass log ($WORK/hallpass.log):" >&2
    tail -n 40 "$WORK/hallpass.log" >&2 || true
  fi
  if [[ $rc -eq 0 && -z ${KEEP_SDK_WORK:-} ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh email each run, so the same database can be used again.
USERINFO_EMAIL="sdk-migrate-$(python3 -c 'import uuid; print(uuid.uuid4())')@example.com"
python3 "$SDK_DIR/userinfo_server.py" --email "$USERINFO_EMAIL" --port-file "$WORK/userinfo.port" \
  2>"$WORK/userinfo.log" &
USERINFO_PID=$!
for _ in $(seq 100); do [[ -s $WORK/userinfo.port ]] && break; sleep 0.1; done
[[ -s $WORK/userinfo.port ]] || { echo "run.sh: userinfo server did not start" >&2; cat "$WORK/userinfo.log" >&2; exit 1; }
USERINFO_PORT=$(cat "$WORK/userinfo.port")

case $DATABASE_URL in
  postgres://* | postgresql://* | sqlite:*) ;;
  *) mkdir -p "$(dirname "$DATABASE_URL")" ;;
esac

PORT=$(free_port)
PROJECT_ID="project-test-$(python3 -c 'import uuid; print(uuid.uuid4())')"
SECRET="secret-test-$(openssl rand -hex 24)"
export HALLPASS_URL="http://127.0.0.1:$PORT"
export HALLPASS_PROJECT_ID=$PROJECT_ID
export HALLPASS_SECRET=$SECRET
export USERINFO_EMAIL

# One master key for the server and the operator CLI below (both open the same database).
MASTER_KEY=${HALLPASS_MASTER_KEY:-$(openssl rand -base64 32)}

# Sets SERVER_PID (stopped by cleanup).
start_hallpass "$HALLPASS_BIN" "$WORK/hallpass.log" "$PORT" "$DATABASE_URL" "$MASTER_KEY" \
  "$PROJECT_ID" "$SECRET" "http://127.0.0.1:$USERINFO_PORT/userinfo"

echo "# hallpass $HALLPASS_BIN on $HALLPASS_URL, database $DATABASE_URL, logs in $WORK"
wait_ready "$HALLPASS_URL" "$SERVER_PID" || exit 1

# ---------------------------------------------------------------- RBAC policy
# The suites' RBAC checks expect policy.json (roles stytch_user, editor, billing_admin). The
# operator CLI writes it to the database; the running server picks it up within ~1 s.
POLICY_FILE=$SDK_DIR/policy.json
export HALLPASS_RBAC_POLICY_FILE=$POLICY_FILE
hallpass_cli() {
  HALLPASS_DATABASE_URL="$DATABASE_URL" HALLPASS_MASTER_KEY="$MASTER_KEY" "$HALLPASS_BIN" "$@"
}
if ! hallpass_cli rbac set "$PROJECT_ID" "$POLICY_FILE" >"$WORK/rbac-set.log" 2>&1; then
  echo "run.sh: hallpass rbac set $PROJECT_ID $POLICY_FILE failed:" >&2
  cat "$WORK/rbac-set.log" >&2
  exit 1
fi
# Exit status 0 when a GET /v1/rbac/policy body (stdin) lists the role `editor`.
has_editor='import json, sys
try:
    roles = json.load(sys.stdin)["policy"]["roles"]
    sys.exit(0 if any(r.get("role_id") == "editor" for r in roles) else 1)
except Exception:
    sys.exit(1)'
policy_seen=""
deadline=$((SECONDS + 10))
while ((SECONDS < deadline)); do
  if curl -s --max-time 2 -u "$PROJECT_ID:$SECRET" "$HALLPASS_URL/v1/rbac/policy" >"$WORK/policy.json" 2>/dev/null &&
    python3 -c "$has_editor" <"$WORK/policy.json"; then
    policy_seen=1
    break
  fi
  sleep 0.2
done
if [[ -z $policy_seen ]]; then
  echo "run.sh: GET /v1/rbac/policy does not show the role editor 10 s after rbac set; last answer:" >&2
  cat "$WORK/policy.json" >&2 || true
  echo >&2
  exit 1
fi
echo "# RBAC policy $POLICY_FILE applied (hallpass rbac set) and served by GET /v1/rbac/policy"
# `rbac show` prints what was set (one check of its own, counted in the totals).
setup_checks=1
setup_failed=0
if hallpass_cli rbac show "$PROJECT_ID" >"$WORK/rbac-show.out" 2>&1 && grep -qw editor "$WORK/rbac-show.out"; then
  echo "ok - [run.sh] hallpass rbac show prints the policy"
else
  echo "FAIL - [run.sh] hallpass rbac show $PROJECT_ID: $(tr '\n' ' ' <"$WORK/rbac-show.out" | cut -c1-400)"
  setup_failed=1
fi

# ---------------------------------------------------------------- trusted auth token profile
# The suites' sessions.attest checks sign their own tokens with a fresh EC P-256 key (ES256):
# PKCS#8 private key for the suites, SPKI public key for `hallpass token-profile create`.
ATTEST_PRIVATE_KEY_FILE=$WORK/attest-private.pem
ATTEST_PUBLIC_KEY_FILE=$WORK/attest-public.pem
if ! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ATTEST_PRIVATE_KEY_FILE" 2>"$WORK/openssl.log" ||
  ! openssl pkey -in "$ATTEST_PRIVATE_KEY_FILE" -pubout -out "$ATTEST_PUBLIC_KEY_FILE" 2>>"$WORK/openssl.log"; then
  echo "run.sh: openssl could not make the EC P-256 key pair for the attest checks:" >&2
  cat "$WORK/openssl.log" >&2
  exit 1
fi
ATTEST_ISSUER=https://idp.sdk-tests.example/
ATTEST_AUDIENCE=hallpass-sdk-tests
# Prints the profile_id of a new profile for the key above (extra flags appended), or exits.
create_token_profile() {
  local out=$WORK/token-profile-create.out err=$WORK/token-profile-create.err
  if ! hallpass_cli token-profile create "$PROJECT_ID" --issuer "$ATTEST_ISSUER" --audience "$ATTEST_AUDIENCE" \
    --pem-file "$ATTEST_PUBLIC_KEY_FILE" --json "$@" >"$out" 2>"$err"; then
    echo "run.sh: hallpass token-profile create $PROJECT_ID --pem-file $ATTEST_PUBLIC_KEY_FILE $* failed:" >&2
    cat "$out" "$err" >&2
    exit 1
  fi
  if ! python3 -c 'import json, sys; print(json.load(sys.stdin)["profile_id"])' <"$out" 2>>"$err"; then
    echo "run.sh: hallpass token-profile create --json printed no profile_id:" >&2
    cat "$out" "$err" >&2
    exit 1
  fi
}
ATTEST_PROFILE_ID=$(create_token_profile --jit-provisioning)
# A second profile on the same key without just-in-time provisioning (unknown user -> 404).
ATTEST_PROFILE_ID_NO_JIT=$(create_token_profile)
export ATTEST_PROFILE_ID ATTEST_PROFILE_ID_NO_JIT ATTEST_PRIVATE_KEY_FILE ATTEST_ISSUER ATTEST_AUDIENCE
echo "# trusted auth token profiles $ATTEST_PROFILE_ID (jit) and $ATTEST_PROFILE_ID_NO_JIT (hallpass token-profile create, ES256 key in $WORK)"
# `token-profile list` shows both (one check of its own, counted in the totals).
setup_checks=$((setup_checks + 1))
if hallpass_cli token-profile list "$PROJECT_ID" --json >"$WORK/token-profile-list.out" 2>"$WORK/token-profile-list.err" &&
  python3 -c 'import json, sys
rows = {p["profile_id"]: p for p in json.load(open(sys.argv[1]))}
jit, nojit = rows[sys.argv[2]], rows[sys.argv[3]]
assert jit["issuer"] == nojit["issuer"] == sys.argv[4], rows
assert jit["jit_provisioning"] is True and nojit["jit_provisioning"] is False, rows' \
    "$WORK/token-profile-list.out" "$ATTEST_PROFILE_ID" "$ATTEST_PROFILE_ID_NO_JIT" "$ATTEST_ISSUER" 2>>"$WORK/token-profile-list.err"; then
  echo "ok - [run.sh] hallpass token-profile list shows both profiles"
else
  echo "FAIL - [run.sh] hallpass token-profile list $PROJECT_ID --json: $(cat "$WORK/token-profile-list.out" "$WORK/token-profile-list.err" | tr '\n' ' ' | cut -c1-400)"
  setup_failed=$((setup_failed + 1))
fi

# ---------------------------------------------------------------- suites
status=$((setup_failed > 0 ? 1 : 0))
total_passed=$((setup_checks - setup_failed))
total_failed=$setup_failed
for suite in $SDK_SUITES; do
  echo "# ---- $suite SDK suite"
  rc=0
  case $suite in
    node) (cd "$NODE_DIR" && node suite.js) >"$WORK/$suite.out" 2>&1 || rc=$? ;;
    python) (cd "$PY_DIR" && "$VENV/bin/python" -W ignore suite.py) >"$WORK/$suite.out" 2>&1 || rc=$? ;;
    *) echo "run.sh: unknown suite $suite" >"$WORK/$suite.out"; rc=2 ;;
  esac
  # Prefix each line so the per-suite summaries are not taken for the run's own.
  sed "s/^/[$suite] /" "$WORK/$suite.out"
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/$suite.out" | tail -n 1 || true)
  if [[ -n $summary ]]; then
    total_passed=$((total_passed + $(cut -d' ' -f1 <<<"$summary")))
    total_failed=$((total_failed + $(cut -d' ' -f3 <<<"$summary")))
  fi
  if [[ $rc -ne 0 ]]; then
    status=1
    [[ -n $summary && $(cut -d' ' -f3 <<<"$summary") -gt 0 ]] || total_failed=$((total_failed + 1))
  fi
done

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "run.sh: hallpass died during the suites" >&2
  status=1
  total_failed=$((total_failed + 1))
fi
echo "$total_passed passed, $total_failed failed"
exit "$status"
