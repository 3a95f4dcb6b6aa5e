#!/usr/bin/env bash
# Prints the path of the pinned Deno release, installing it when needed.
#
# Uses the `deno` on PATH only when it is exactly DENO_VERSION: the hub relies on close()
# cancelling a pending write, which only some Deno 2.x releases do, so a kicked client could
# keep its fd and SIGTERM spin on another one. Otherwise the pinned release is installed
# from the npm registry's `deno` package into .tools/ (git-ignored).
# Everything but the final path goes to stderr, and only when something is installed,
# so `make -s` stays quiet.
set -euo pipefail

DENO_VERSION=2.9.6
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix="$root/.tools/deno-$DENO_VERSION"

if command -v deno >/dev/null 2>&1; then
  have=$(deno --version 2>/dev/null | sed -n '1s/^deno \([^ ]*\).*/\1/p')
  if [ "$have" = "$DENO_VERSION" ]; then
    command -v deno
    exit 0
  fi
fi

case "$(uname -m)" in
  x86_64) pkg=@deno/linux-x64-glibc ;;
  aarch64) pkg=@deno/linux-arm64-glibc ;;
  *) echo "procMonitor: no Deno package for $(uname -m); install Deno $DENO_VERSION on PATH" >&2; exit 1 ;;
esac
bin="$prefix/node_modules/$pkg/deno"

if [ ! -x "$bin" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "procMonitor: Deno $DENO_VERSION is not on PATH and npm is missing to install it" >&2
    exit 1
  fi
  echo "procMonitor: installing Deno $DENO_VERSION into ${prefix#"$root"/}" >&2
  mkdir -p "$prefix"
  # The platform package carries the binary itself; no install script has to run.
  npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
    --prefix "$prefix" "$pkg@$DENO_VERSION" >&2
fi
echo "$bin"
