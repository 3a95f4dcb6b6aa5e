#!/bin/sh
# procMonitor launcher: runs the program with the Deno runtime that ships privately with it
# (@LIBDIR@). Nothing is downloaded: npm packages come from the read-only cache prepared at
# build time (DENO_DIR), and --cached-only forbids fetching anything else.
# The directory is found relative to this script, so an unpacked or DESTDIR copy runs too.
here=$(dirname "$(readlink -f "$0")")
lib="$here/@RELLIB@"
[ -x "$lib/deno" ] || lib="@LIBDIR@"
DENO_DIR="$lib/deno_dir"
# Under the unit (PROCMONITOR_DENO_DIR, in its CacheDirectory), Deno's caches of the program
# go where they can be written; the shipped npm packages are linked in, read-only.
if [ -n "${PROCMONITOR_DENO_DIR:-}" ]; then
  npm=$(cd "$lib/deno_dir/npm" && pwd -P) && mkdir -p "$PROCMONITOR_DENO_DIR" &&
    ln -sfn "$npm" "$PROCMONITOR_DENO_DIR/npm" && DENO_DIR="$PROCMONITOR_DENO_DIR"
fi
DENO_NO_UPDATE_CHECK=1
DENO_NO_PROMPT=1
export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PROMPT
exec "$lib/deno" run --cached-only --frozen -A --config="$lib/deno.json" \
  --v8-flags=--max-semi-space-size=1,--heap-growing-percent=15 "$lib/main.ts" "$@"
