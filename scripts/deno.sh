#!/usr/bin/env bash
# Prints the path of a Deno binary of the pinned release line, installing it when needed.
#
# Uses the `deno` on PATH when its major version matches DENO_MAJOR; otherwise installs
# the pinned release from the npm registry's `deno` package into .tools/ (git-ignored).
# Everything but the final path goes to stderr, and only when something is installed,
# so `make -s` stays quiet.
set -euo pipefail

DENO_VERSION=2.9.6
DENO_MAJOR=${DENO_VERSION%%.*}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix="$root/.tools/deno-$DENO_VERSION"

if command -v deno >/dev/null 2>&1; then
  have=$(deno --version 2>/dev/null | sed -n '1s/^deno \([0-9]*\)\..*/\1/p')
  if [ "$have" = "$DENO_MAJOR" ]; then
    command -v deno
    exit 0
  fi
fi

case "$(uname -m)" in
  x86_64) pkg=@deno/linux-x64-glibc ;;
  aarch64) pkg=@deno/linux-arm64-glibc ;;
  *) echo "procMonitor: no Deno package for $(uname -m); install Deno $DENO_MAJOR.x on PATH" >&2; exit 1 ;;
esac
bin="$prefix/node_modules/$pkg/deno"

if [ ! -x "$bin" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "procMonitor: Deno $DENO_MAJOR.x is not on PATH and npm is missing to install it" >&2
    exit 1
  fi
  echo "procMonitor: installing Deno $DENO_VERSION into ${prefix#"$root"/}" >&2
  mkdir -p "$prefix"
  # The platform package carries the binary itself; no install script has to run.
  npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
    --prefix "$prefix" "$pkg@$DENO_VERSION" >&2
fi
echo "$bin"
