#!/usr/bin/env bash
# make asan: the live tests against a libprocconn built with ASan and UBSan (README,
# "Fuzzing and sanitizers").
#
#   native/fuzz/asan_live.sh LIB TEST...   (DENO and CLANG from the environment)
#
# Deno hosts the ASan runtime, but not through LD_PRELOAD: every child process would
# inherit it, and programs the tests start (logger(1) for --syslog) hang in ASan's
# textdomain() interceptor on this glibc. Instead a copy of the pinned Deno gets the
# runtime as its first DT_NEEDED (patchelf), so only Deno processes, the tests and the
# monitors they start (Deno.execPath()), carry it. Leak checking is off: Deno leaks by
# design at exit. Any report, from any of those processes, lands in a log file here and
# fails the run, as does a failed test.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
lib=$(realpath "${1:?usage: asan_live.sh LIB TEST...}")
shift
DENO=${DENO:-$(scripts/deno.sh)}
CLANG=${CLANG:-clang}
out=native/fuzz/out
logs=$out/asan-logs

runtime=$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.so)
if [ ! -f "$runtime" ]; then
  echo "asan: no ASan runtime from $CLANG (apt-get install clang)" >&2
  exit 1
fi
if ! command -v patchelf >/dev/null 2>&1; then
  echo "asan: patchelf is missing (apt-get install patchelf)" >&2
  exit 1
fi
deno_asan=$out/deno-asan
if [ ! -x "$deno_asan" ] || [ "$DENO" -nt "$deno_asan" ] ||
  ! readelf -d "$deno_asan" | grep -qF "[$runtime]"; then
  mkdir -p "$out"
  cp "$DENO" "$deno_asan.tmp" && patchelf --add-needed "$runtime" "$deno_asan.tmp" &&
    mv "$deno_asan.tmp" "$deno_asan" || {
    echo "asan: could not make $deno_asan" >&2
    exit 1
  }
fi

rm -rf "$logs"
mkdir -p "$logs"
echo "asan: live tests with $lib under $deno_asan"
# CI=true: a library that fails to load fails the live tests instead of skipping them.
CI=true PROCMONITOR_LIB="$lib" DENO="$root/$deno_asan" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$root/$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$root/$logs/ubsan" \
  bash scripts/test.sh "$@" 2>&1 | sed -u 's/^/asan| /'
status=${PIPESTATUS[0]}

reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
  for f in $reports; do
    echo "asan: report $f:" >&2
    head -n 80 "$f" >&2
  done
  echo "asan: sanitizer findings in the live tests" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "asan: the live tests failed under ASan/UBSan (exit $status)" >&2
  exit 1
fi
echo "asan: live tests passed, no sanitizer report"
