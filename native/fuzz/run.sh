#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time (make fuzz; README, "Fuzzing and sanitizers").
#
#   native/fuzz/run.sh SECONDS FUZZER...   e.g. native/fuzz/run.sh 60 datagram stat
#
# Each fuzzer native/fuzz/out/fuzz_NAME starts from its committed seed corpus
# native/fuzz/corpus/NAME/ (every input there runs first: the regression inputs of past
# findings included) and writes what it learns to native/fuzz/out/corpus-NAME/, never to
# the committed corpus. A crash, a sanitizer report or a broken check stops it with the
# input saved as native/fuzz/out/crash-NAME-*; this script then fails. Fix the bug, and
# commit that input to native/fuzz/corpus/NAME/ as a regression input.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds=${1:?usage: run.sh SECONDS FUZZER...}
shift
out="$here/out"
mkdir -p "$out"
failed=()
for name in "$@"; do
  bin="$out/fuzz_$name"
  work="$out/corpus-$name"
  log="$out/fuzz_$name.log"
  mkdir -p "$work"
  dict=()
  [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
  echo "fuzz: $name for ${seconds}s (seeds: native/fuzz/corpus/$name/)"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: one eating 2 GiB is a leak.
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/crash-$name-" "${dict[@]}" "$work" "$here/corpus/$name" \
    >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
  if [ "$status" -ne 0 ]; then
    failed+=("$name")
    echo "fuzz: $name FAILED (exit $status) after ${runs:-?} runs; its log:" >&2
    # The report: the sanitizer's or the check's words, the stack, the saved input.
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse|INITED|RELOAD)' "$log" | tail -n 60 >&2
    for crash in "$out"/crash-"$name"-* "$out"/timeout-* "$out"/oom-*; do
      [ -f "$crash" ] || continue
      echo "fuzz: input $crash, base64: $(base64 -w0 "$crash" | head -c 4000)" >&2
    done
  else
    echo "fuzz: $name ok: ${runs:-?} runs (${rate:-?}/s), ${cov:-no coverage line}, no finding"
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
