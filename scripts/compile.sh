#!/usr/bin/env bash
# Builds dist/procMonitor: the whole program, libprocconn.so embedded, in one executable
# that runs where neither Deno nor Node is installed.
#
# `deno compile` starts from its runtime base binary, denort, of the same Deno release. It is
# taken from DENORT_BIN, or from Deno's cache; with ALLOW_DENORT_DOWNLOAD=1, deno compile may
# download it (machines with internet access). Otherwise one sentence says what is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DENO=${DENO:-$(scripts/deno.sh)}
version=$("$DENO" --version | sed -n '1s/^deno \([^ ]*\).*/\1/p')

if [ -n "${DENORT_BIN:-}" ]; then
  if [ ! -x "$DENORT_BIN" ]; then
    echo "procMonitor: cannot compile as DENORT_BIN ($DENORT_BIN) is not an executable file" >&2
    exit 1
  fi
else
  cache=${DENO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deno}
  if ! ls "$cache"/dl/release/v"$version"/denort-* >/dev/null 2>&1 &&
    [ "${ALLOW_DENORT_DOWNLOAD:-}" != 1 ]; then
    echo "procMonitor: cannot compile as deno compile needs its denort $version base binary, which is neither in DENORT_BIN nor in Deno's cache (set DENORT_BIN, or ALLOW_DENORT_DOWNLOAD=1 where it can be downloaded)" >&2
    exit 1
  fi
fi

make -s build
mkdir -p dist
"$DENO" compile -q -A --v8-flags="${PROCMONITOR_V8_FLAGS:---max-semi-space-size=1}" \
  --include native/libprocconn.so --output dist/procMonitor main.ts
echo "Built dist/procMonitor" >&2
