#!/usr/bin/env bash
# Builds dist/procMonitor: the whole program, libprocconn.so embedded, in one executable
# that runs where neither Deno nor Node is installed.
#
# `deno compile` starts from its runtime base binary, denort, of the same Deno release: from
# DENORT_BIN when set, else from Deno's cache, else downloaded from dl.deno.land. Where it
# cannot be downloaded (no internet), one sentence names DENORT_BIN and nothing is left in
# dist/. The full deno binary is refused as DENORT_BIN: a program built on it ignores its
# payload and opens a REPL.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DENO=${DENO:-$(scripts/deno.sh)}
version=$("$DENO" --version | sed -n '1s/^deno \([^ ]*\).*/\1/p')

if [ -n "${DENORT_BIN:-}" ]; then
  if [ ! -f "$DENORT_BIN" ] || [ ! -x "$DENORT_BIN" ]; then
    echo "procMonitor: cannot compile as DENORT_BIN ($DENORT_BIN) is not an executable file" >&2
    exit 1
  fi
  # The full deno lists its subcommands (compile, run, ...); denort has none.
  if timeout 20 "$DENORT_BIN" help </dev/null 2>&1 | grep -qw "compile"; then
    echo "procMonitor: cannot compile as DENORT_BIN ($DENORT_BIN) is the full deno, not the denort $version base binary (a program built on it would open a REPL)" >&2
    exit 1
  fi
fi

make -s build
# Built in a private directory and moved into dist/ only when complete: no partial file.
work=$(mktemp -d "${TMPDIR:-/tmp}/procmonitor-compile.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! "$DENO" compile -q -A --v8-flags="${PROCMONITOR_V8_FLAGS:---max-semi-space-size=1,--heap-growing-percent=15}" \
  --include native/libprocconn.so --output "$work/procMonitor" main.ts 2>"$work/err"; then
  if [ -n "${DENORT_BIN:-}" ]; then
    echo "procMonitor: cannot compile as deno compile could not use DENORT_BIN ($DENORT_BIN): $(grep -m1 -v '^\s*$' "$work/err" | sed 's/\x1b\[[0-9;]*m//g')" >&2
  elif grep -q -e "Setting up base binary" -e "denort" "$work/err"; then
    echo "procMonitor: cannot compile as deno compile could not download its denort $version base binary (no internet?); set DENORT_BIN to a denort $version binary" >&2
  else
    cat "$work/err" >&2
  fi
  exit 1
fi
# A base binary that is not denort (e.g. /bin/true) still "compiles": run the result once.
if ! timeout 60 "$work/procMonitor" --version </dev/null 2>/dev/null | head -n 1 |
  grep -qx "procMonitor $(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p;T;q' deno.json)"; then
  echo "procMonitor: cannot compile as the executable built on ${DENORT_BIN:-denort $version} does not run procMonitor --version; set DENORT_BIN to the denort $version base binary" >&2
  exit 1
fi
mkdir -p dist
mv -f "$work/procMonitor" dist/procMonitor
echo "Built dist/procMonitor" >&2
