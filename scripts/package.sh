#!/usr/bin/env bash
# Packaging (README, "Install"): one layout for `make deb` and `make install`.
#
#   package.sh deb                          dist/procmonitor_<version>_<arch>.deb
#   package.sh install DESTDIR PREFIX SYSCONFDIR
#   package.sh uninstall DESTDIR PREFIX SYSCONFDIR
#
# Layout, under PREFIX (/usr for the deb, /usr/local by default for make install):
#   lib/procmonitor/      the pinned Deno binary, main.ts, lib/, deno.json, deno.lock,
#                         native/libprocconn.so (where lib/kernel/ffi.ts looks), and
#                         deno_dir/: the npm packages (LogTape), cached at build time
#   bin/procMonitor       the launcher (packaging/launcher.sh)
#   lib/systemd/system/procmonitor.service   (the deb: /lib/systemd/system)
#   share/man/man8/procMonitor.8.gz
#   SYSCONFDIR/default/procmonitor, SYSCONFDIR/procmonitor/auth (0600, empty)
# Needs: DENO (the pinned Deno), native/libprocconn.so and doc/procMonitor.8 built.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
DENO=${DENO:-$(scripts/deno.sh)}
MAN=doc/procMonitor.8
LIB=native/libprocconn.so

die() { echo "package.sh: $*" >&2; exit 1; }

# The program tree for LIBDIR (an absolute path on the target) into DEST$LIBDIR.
stage_program() {
  local dest=$1 libdir=$2 d="$1$2"
  [ -f "$LIB" ] || die "$LIB is missing; run make first"
  install -d -m 0755 "$d" "$d/native"
  install -m 0755 "$DENO" "$d/deno"
  install -m 0644 main.ts deno.json deno.lock "$d/"
  (cd lib && find . -type d) | while read -r dir; do install -d -m 0755 "$d/lib/$dir"; done
  (cd lib && find . -type f -name '*.ts') | while read -r f; do install -m 0644 "lib/$f" "$d/lib/$f"; done
  install -m 0644 "$LIB" "$d/native/libprocconn.so"
  strip --strip-unneeded "$d/native/libprocconn.so"
  # A private DENO_DIR with the npm packages only; read-only at run time (--cached-only).
  local cache
  cache=$(mktemp -d)
  (cd "$d" && DENO_DIR="$cache" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 ./deno cache -q main.ts) ||
    { rm -rf "$cache"; die "deno cache main.ts failed (the npm registry or a cache is needed once, at build time)"; }
  install -d -m 0755 "$d/deno_dir"
  cp -r "$cache/npm" "$d/deno_dir/"
  rm -rf "$cache"
  find "$d/deno_dir" -type d -exec chmod 0755 {} + && find "$d/deno_dir" -type f -exec chmod 0644 {} +
  # The launcher finds LIBDIR relative to itself (bin/../lib/procmonitor), else absolute.
  install -d -m 0755 "$dest$3"
  sed -e "s#@LIBDIR@#$libdir#g" -e "s#@RELLIB@#../lib/procmonitor#g" packaging/launcher.sh \
    >"$dest$3/procMonitor"
  chmod 0755 "$dest$3/procMonitor"
}

# The unit (ExecStart at BINDIR), the man page and the /etc files.
stage_rest() {
  local dest=$1 bindir=$2 unitdir=$3 mandir=$4 etc=$5 keep_etc=$6
  install -d -m 0755 "$dest$unitdir" "$dest$mandir/man8"
  sed "s#^ExecStart=/usr/bin/procMonitor#ExecStart=$bindir/procMonitor#" \
    packaging/procmonitor.service >"$dest$unitdir/procmonitor.service"
  chmod 0644 "$dest$unitdir/procmonitor.service"
  [ -f "$MAN" ] || die "$MAN is missing; run make man first"
  gzip -9n <"$MAN" >"$dest$mandir/man8/procMonitor.8.gz"
  chmod 0644 "$dest$mandir/man8/procMonitor.8.gz"
  install -d -m 0755 "$dest$etc/default"
  install -d -m 0700 "$dest$etc/procmonitor"
  # make install leaves files an administrator already has alone.
  if [ "$keep_etc" = no ] || [ ! -e "$dest$etc/default/procmonitor" ]; then
    install -m 0644 packaging/default "$dest$etc/default/procmonitor"
  fi
  if [ "$keep_etc" = no ] || [ ! -e "$dest$etc/procmonitor/auth" ]; then
    install -m 0600 /dev/null "$dest$etc/procmonitor/auth"
  fi
}

version() { sed -nE 's/^ *"version": *"([^"]+)".*/\1/p' deno.json | head -n 1; }

build_deb() {
  local ver arch out
  ver=$(version)
  [ -n "$ver" ] || die "no \"version\" in deno.json"
  arch=$(dpkg --print-architecture)
  mkdir -p dist
  stage=$(mktemp -d "$root/dist/deb.XXXXXX")
  trap 'rm -rf "$stage" "$stage.deb"' EXIT
  chmod 0755 "$stage"
  stage_program "$stage" /usr/lib/procmonitor /usr/bin
  stage_rest "$stage" /usr/bin /lib/systemd/system /usr/share/man "/etc" no
  local doc="$stage/usr/share/doc/procmonitor"
  install -d -m 0755 "$doc" "$stage/DEBIAN"
  install -m 0644 packaging/debian/copyright "$doc/copyright"
  # A native package (no Debian revision): its changelog is changelog.gz.
  sed "s/@VERSION@/$ver/" packaging/debian/changelog | gzip -9n >"$doc/changelog.gz"
  chmod 0644 "$doc/changelog.gz"
  install -d -m 0755 "$stage/usr/share/lintian/overrides"
  install -m 0644 packaging/debian/lintian-overrides "$stage/usr/share/lintian/overrides/procmonitor"
  local size
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  sed -e "s/@VERSION@/$ver/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    packaging/debian/control >"$stage/DEBIAN/control"
  install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
  install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm \
    "$stage/DEBIAN/"
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z |
    xargs -0 md5sum | sed 's#  \./#  #' >DEBIAN/md5sums)
  chmod 0644 "$stage/DEBIAN/md5sums"
  out="dist/procmonitor_${ver}_${arch}.deb"
  # Built beside the unique stage and renamed into place: a concurrent build never sees a
  # partial file, and neither clobbers the other's temporary.
  dpkg-deb --build --root-owner-group -Zgzip "$stage" "$stage.deb" >/dev/null
  mv "$stage.deb" "$out"
  echo "$out"
}

# What make install puts under DESTDIR, one path a line (directories last, deepest first).
installed_files() {
  local prefix=$1
  echo "$prefix/bin/procMonitor"
  echo "$prefix/lib/systemd/system/procmonitor.service"
  echo "$prefix/share/man/man8/procMonitor.8.gz"
}

case ${1:-} in
  deb) build_deb ;;
  install)
    dest=${2:-} prefix=${3:-/usr/local} etc=${4:-/etc}
    stage_program "$dest" "$prefix/lib/procmonitor" "$prefix/bin"
    stage_rest "$dest" "$prefix/bin" "$prefix/lib/systemd/system" "$prefix/share/man" "$etc" yes
    ;;
  uninstall)
    dest=${2:-} prefix=${3:-/usr/local} etc=${4:-/etc}
    rm -rf "$dest$prefix/lib/procmonitor"
    installed_files "$prefix" | while read -r f; do rm -f "$dest$f"; done
    # The /etc files go only while they are still as installed; edited ones stay, said so.
    if [ -f "$dest$etc/default/procmonitor" ]; then
      if cmp -s packaging/default "$dest$etc/default/procmonitor"; then
        rm -f "$dest$etc/default/procmonitor"
      else
        echo "kept $dest$etc/default/procmonitor (edited)" >&2
      fi
    fi
    if [ -f "$dest$etc/procmonitor/auth" ]; then
      if [ -s "$dest$etc/procmonitor/auth" ]; then
        echo "kept $dest$etc/procmonitor/auth (holds a password)" >&2
      else
        rm -f "$dest$etc/procmonitor/auth"
      fi
    fi
    # Directories install created, if now empty (never a shared one that still has files).
    for dir in "$etc/procmonitor" "$etc/default" "$prefix/share/man/man8" "$prefix/share/man" \
      "$prefix/share" "$prefix/lib/systemd/system" "$prefix/lib/systemd" "$prefix/lib" \
      "$prefix/bin" "$etc" "$prefix"; do
      [ -n "$dest" ] || case $dir in "$etc/procmonitor" | "$prefix/lib/systemd/system") ;; *) continue ;; esac
      rmdir "$dest$dir" 2>/dev/null || true
    done
    # Under a DESTDIR, the parents of PREFIX too (usr/ of usr/local), when empty.
    if [ -n "$dest" ]; then
      up=$(dirname "$prefix")
      while [ "$up" != / ] && [ "$up" != . ]; do
        rmdir "$dest$up" 2>/dev/null || break
        up=$(dirname "$up")
      done
    fi
    ;;
  *) die "usage: package.sh deb | install DESTDIR PREFIX SYSCONFDIR | uninstall DESTDIR PREFIX SYSCONFDIR" ;;
esac
