#!/usr/bin/env bash
# Runs the test suite and ends with the plain line CI reads: "N passed, N failed".
#
# deno test's own summary ("ok | 12 passed | 0 failed (3s)") is parsed and restated.
# Arguments, when given, are test files or folders (default: tests/).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DENO=${DENO:-$(scripts/deno.sh)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$DENO" test -A --no-prompt "${@:-tests/}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# deno colours its output even into a pipe: strip the escapes before looking for the summary.
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| ' | tail -n 1)
passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
ignored=$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$summary")
if [ -z "$passed" ] || [ -z "$failed" ]; then
  # deno test died before its summary (type error, crash): count that as a failure.
  echo "0 passed, 1 failed"
  exit 1
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ -n "$ignored" ] && [ "$ignored" -gt 0 ]; then
  echo "$passed passed, $failed failed, $ignored skipped"
else
  echo "$passed passed, $failed failed"
fi
exit "$status"
