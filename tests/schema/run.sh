#!/usr/bin/env bash
# Schema-driven fuzzing: holds a real hallpass server to openapi/openapi.json with
# schemathesis (every response's status, content type, headers and body must be the ones
# the document describes, and no request may cause a 5xx other than the documented 503).
#
#   tests/schema/run.sh DATABASE_URL
#
# DATABASE_URL: a SQLite file path (e.g. /tmp/schema/hallpass.db; its folder is created) or a
# ready postgres://… URL. The caller creates and drops the database.
# Environment:
#   HALLPASS_BIN          the binary to test (default: target/debug/hallpass under the repo root)
#   HALLPASS_MASTER_KEY   used when set; otherwise a fresh one is made (a database can be reused
#                         by a later run only with the same master key)
#   SCHEMA_MAX_EXAMPLES   test cases per operation and phase (default 120)
#   SCHEMA_WORKERS        concurrent schemathesis workers (default 2)
#   SCHEMA_SEED           a seed, to replay a run (default: random; printed by schemathesis)
#   SCHEMA_ARGS           extra arguments for `st run` (e.g. "--include-path /v1/users")
#   KEEP_SCHEMA_WORK=1    keep the temporary folder (server log, reports) even on success
# The last line of output is `N passed, M failed`: API operations (and the stateful
# scenarios, counted as one) that passed / failed. The exit status is non-zero on any failure.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DATABASE_URL" >&2
  exit 2
fi
DATABASE_URL=$1

SUITE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SUITE_DIR/../.." && pwd)
HALLPASS_BIN=${HALLPASS_BIN:-$REPO_ROOT/target/debug/hallpass}
[[ $HALLPASS_BIN = /* ]] || HALLPASS_BIN=$REPO_ROOT/$HALLPASS_BIN
DOCUMENT=$REPO_ROOT/openapi/openapi.json
# free_port, stop, start_hallpass, wait_ready (`shellcheck -x` follows it; SC1091 is its
# "not following" note when run without -x).
# shellcheck source=SCRIPTDIR/../lib/serve.sh disable=SC1091
source "$REPO_ROOT/tests/lib/serve.sh"
MAX_EXAMPLES=${SCHEMA_MAX_EXAMPLES:-120}
WORKERS=${SCHEMA_WORKERS:-2}

if [[ ! -x $HALLPASS_BIN ]]; then
  echo "run.sh: no hallpass binary at $HALLPASS_BIN (build it, or set HALLPASS_BIN)" >&2
  exit 2
fi
for tool in python3 curl openssl sha256sum; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
[[ -f $DOCUMENT ]] || { echo "run.sh: no document at $DOCUMENT" >&2; exit 2; }

# ---------------------------------------------------------------- schemathesis (pinned)
# tests/schema/.venv is git-ignored (.venv/ in the root .gitignore); it is rebuilt whenever
# requirements.txt changes.
VENV=$SUITE_DIR/.venv
REQ_SUM=$(sha256sum "$SUITE_DIR/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $VENV/bin/st || "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$REQ_SUM" ]]; then
  echo "# creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$SUITE_DIR/requirements.txt"
  echo "$REQ_SUM" >"$VENV/.requirements.sha256"
fi

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hallpass-schema.XXXXXX")
USERINFO_PID=""
SERVER_PID=""
SUMMARY_PRINTED=""
cleanup() {
  local rc=$?
  stop "$SERVER_PID"
  stop "$USERINFO_PID"
  if [[ $rc -ne 0 && -z $SUMMARY_PRINTED ]]; then
    # Stopped before schemathesis could report: the setup failed.
    if [[ -f $WORK/hallpass.log ]]; then
      echo "# last lines of the hallpass log ($WORK/hallpass.log):" >&2
      tail -n 40 "$WORK/hallpass.log" >&2 || true
    fi
    echo "0 passed, 1 failed"
  fi
  if [[ $rc -eq 0 && -z ${KEEP_SCHEMA_WORK:-} ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

# The stub answers every bearer token with this email; a user with it is created below, so
# migrate's fuzzed tokens reach its success path (with and without a session).
MIGRATE_EMAIL="schema-migrate-$(uuid)@example.com"
python3 "$SUITE_DIR/userinfo_stub.py" --email "$MIGRATE_EMAIL" --port-file "$WORK/userinfo.port" \
  2>"$WORK/userinfo.log" &
USERINFO_PID=$!
for _ in $(seq 100); do [[ -s $WORK/userinfo.port ]] && break; sleep 0.1; done
[[ -s $WORK/userinfo.port ]] || { echo "run.sh: userinfo stub did not start" >&2; cat "$WORK/userinfo.log" >&2; exit 1; }
USERINFO_PORT=$(cat "$WORK/userinfo.port")

case $DATABASE_URL in
  postgres://* | postgresql://* | sqlite:*) ;;
  *) mkdir -p "$(dirname "$DATABASE_URL")" ;;
esac

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
PROJECT_ID="project-test-$(uuid)"
SECRET="secret-test-$(openssl rand -hex 24)"
MASTER_KEY=${HALLPASS_MASTER_KEY:-$(openssl rand -base64 32)}

# Sets SERVER_PID (stopped by cleanup); JSON logs, for the WARN/ERROR excerpt on failure.
start_hallpass "$HALLPASS_BIN" "$WORK/hallpass.log" "$PORT" "$DATABASE_URL" "$MASTER_KEY" \
  "$PROJECT_ID" "$SECRET" "http://127.0.0.1:$USERINFO_PORT/userinfo" HALLPASS_LOG_FORMAT=json

echo "# hallpass $HALLPASS_BIN on $URL, database $DATABASE_URL, work folder $WORK"
wait_ready "$URL" "$SERVER_PID" || exit 1

# ---------------------------------------------------------------- fixtures
# An RBAC policy (so GET /v1/rbac/policy returns roles, resources and scopes, and roles can be
# assigned), written with the operator CLI; the server picks it up within ~1 s.
if ! HALLPASS_DATABASE_URL="$DATABASE_URL" HALLPASS_MASTER_KEY="$MASTER_KEY" \
  "$HALLPASS_BIN" rbac set "$PROJECT_ID" "$SUITE_DIR/policy.json" >"$WORK/rbac-set.log" 2>&1; then
  echo "run.sh: hallpass rbac set failed:" >&2
  cat "$WORK/rbac-set.log" >&2
  exit 1
fi
policy_seen=""
deadline=$((SECONDS + 10))
while ((SECONDS < deadline)); do
  if curl -s --max-time 2 -u "$PROJECT_ID:$SECRET" "$URL/v1/rbac/policy" | grep -q '"editor"'; then
    policy_seen=1
    break
  fi
  sleep 0.2
done
[[ -n $policy_seen ]] || { echo "run.sh: the RBAC policy is not served 10 s after rbac set" >&2; exit 1; }
# Trusted auth token profiles for attest, with the operator CLI (read from the database on
# every attest, so no wait): a stand-in identity provider's Ed25519 public key, one profile
# that finds users by email only and one that provisions them just in time. fixtures.py signs
# the tokens with openssl; a second key stands for a provider the profiles do not trust.
openssl genpkey -algorithm ed25519 -out "$WORK/idp.key" 2>/dev/null
openssl pkey -in "$WORK/idp.key" -pubout -out "$WORK/idp.pub"
openssl genpkey -algorithm ed25519 -out "$WORK/other-idp.key" 2>/dev/null
ATTEST_ISSUER="https://idp.schema-suite.test"
ATTEST_AUDIENCE="hallpass-schema-suite"
token_profile() {
  local out
  if ! out=$(HALLPASS_DATABASE_URL="$DATABASE_URL" HALLPASS_MASTER_KEY="$MASTER_KEY" \
    "$HALLPASS_BIN" token-profile create "$PROJECT_ID" --issuer "$ATTEST_ISSUER" \
    --audience "$ATTEST_AUDIENCE" --pem-file "$WORK/idp.pub" --json "$@" 2>"$WORK/token-profile.log"); then
    echo "run.sh: hallpass token-profile create failed:" >&2
    cat "$WORK/token-profile.log" >&2
    exit 1
  fi
  python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["profile_id"])' <<<"$out"
}
PROFILE_BY_EMAIL=$(token_profile)
PROFILE_JIT=$(token_profile --jit-provisioning)
python3 - "$WORK/attest.json" "$PROFILE_BY_EMAIL" "$PROFILE_JIT" "$WORK/idp.key" "$WORK/other-idp.key" \
  "$ATTEST_ISSUER" "$ATTEST_AUDIENCE" <<'EOF'
import json, sys
path, by_email, jit, key, other_key, issuer, audience = sys.argv[1:]
json.dump({"profiles": [by_email, jit], "key": key, "other_key": other_key,
           "issuer": issuer, "audience": audience}, open(path, "w"))
EOF
# Users, sessions, magic links, revocation events and trusted auth tokens that requests can
# name (see fixtures.py), as schemathesis dictionaries.
if ! python3 "$SUITE_DIR/fixtures.py" "$URL" "$PROJECT_ID" "$SECRET" "$MIGRATE_EMAIL" "$WORK/attest.json" \
  >"$WORK/fixtures.toml" 2>"$WORK/fixtures.log"; then
  echo "run.sh: creating the fixtures failed:" >&2
  cat "$WORK/fixtures.log" >&2
  exit 1
fi

# /openapi.json is in the document; a binary that does not serve it yet is not failed for it.
SKIP_ARGS=()
if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/openapi.json" || true) == 404 ]]; then
  echo "# GET /openapi.json is not served by this binary (404): that operation is skipped"
  SKIP_ARGS=(--exclude-path /openapi.json)
fi

# ---------------------------------------------------------------- schemathesis
# The suite's settings, plus this run's fixtures (the dictionaries they refer to).
CONFIG=$WORK/schemathesis.toml
cat "$SUITE_DIR/schemathesis.toml" "$WORK/fixtures.toml" >"$CONFIG"

# Run inside the work folder: schemathesis and hypothesis write their state to the current
# directory. Requests go to 127.0.0.1 only (--url; the UserInfo stub is local too). hooks.py
# keeps the feed's long-polls short (see there).
SEED_ARGS=()
[[ -n ${SCHEMA_SEED:-} ]] && SEED_ARGS=(--seed "$SCHEMA_SEED")
# shellcheck disable=SC2206
EXTRA_ARGS=(${SCHEMA_ARGS:-})
echo "# schemathesis $("$VENV/bin/st" --version | awk '{print $NF}'): $MAX_EXAMPLES examples per operation, $WORKERS workers"
started=$SECONDS
st_rc=0
(
  cd "$WORK"
  SCHEMATHESIS_HOOKS="$SUITE_DIR/hooks.py" \
  "$VENV/bin/st" --config-file "$CONFIG" run "$DOCUMENT" \
    --url "$URL" \
    --auth "$PROJECT_ID:$SECRET" \
    --max-examples "$MAX_EXAMPLES" \
    --workers "$WORKERS" \
    --request-timeout 15 \
    --no-color \
    --report junit --report-junit-path "$WORK/junit.xml" \
    "${SEED_ARGS[@]}" "${SKIP_ARGS[@]}" "${EXTRA_ARGS[@]}"
) 2>&1 | tee "$WORK/schemathesis.out" || st_rc=$?
echo "# schemathesis ran for $((SECONDS - started)) s (exit status $st_rc)"

server_alive=1
if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/healthz" || true) != 200 ]]; then
  echo "run.sh: hallpass no longer answers /healthz after the run (died or hung)" >&2
  server_alive=0
fi
stop "$SERVER_PID"
SERVER_PID=""
if [[ $server_alive -eq 1 && $STOPPED_RC -ne 0 ]]; then
  echo "# note: hallpass did not stop cleanly on SIGTERM (exit status $STOPPED_RC)"
fi

# ---------------------------------------------------------------- summary
# One JUnit test case per API operation, plus one for the stateful scenarios.
summary=$(python3 - "$WORK/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError) as e:
    print(f"0 0 no JUnit report ({e})")
    sys.exit(0)
passed = failed = 0
names = []
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
        names.append(case.get("name", "?"))
    elif case.find("skipped") is None:
        passed += 1
print(passed, failed, "; ".join(names))
EOF
)
read -r passed failed failed_names <<<"$summary"
if [[ $failed -eq 0 && ($st_rc -ne 0 || $passed -eq 0) ]]; then
  # schemathesis failed without a failing operation (an error before or outside them), or
  # tested nothing.
  failed=1
fi
if [[ $server_alive -eq 0 ]]; then
  failed=$((failed + 1))
fi
if [[ $failed -ne 0 ]]; then
  echo "# warnings and errors in the hallpass log ($WORK/hallpass.log), last 20:"
  grep -E '"level":"(WARN|ERROR)"' "$WORK/hallpass.log" | tail -n 20 | sed 's/^/#   /' || true
fi
[[ -n $failed_names ]] && echo "# failed: $failed_names"
SUMMARY_PRINTED=1
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
