#!/usr/bin/env bash
# Runs the race-and-fault suite on SQLite, then on Postgres, and prints the combined
# `N passed, M failed` last; exits nonzero when a case failed or a suite could not run.
#
#   bash tests/race/run.sh [suite.py options, e.g. --bin PATH or --only CASE]
#
# HALLPASS_BIN: the binary to test (default: target/debug/hallpass under the repo root).
# Postgres: the shared server at postgres://postgres@127.0.0.1:5432/postgres must be up
# (override with PG_ADMIN_URL); the suite only creates and drops hallpass_race_* databases.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

args=("$@")
[[ -n ${HALLPASS_BIN:-} ]] && args=(--bin "$HALLPASS_BIN" "${args[@]}")

out=$(mktemp)
trap 'rm -f "$out"' EXIT

passed=0
failed=0
status=0
for backend in sqlite postgres; do
  echo "# ---- $backend"
  # Prefixed, so each backend's own summary is not taken for the run's.
  python3 tests/race/suite.py --backend "$backend" "${args[@]}" </dev/null 2>&1 | tee "$out" | sed -u "s/^/[$backend] /"
  rc=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
  if [[ -n $summary ]]; then
    passed=$((passed + $(cut -d' ' -f1 <<<"$summary")))
    failed=$((failed + $(cut -d' ' -f3 <<<"$summary")))
  fi
  if [[ $rc -ne 0 ]]; then
    status=1
    # A suite that died without counting its failure still counts as one.
    [[ -n $summary && $(cut -d' ' -f3 <<<"$summary") -gt 0 ]] || failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
exit "$status"
