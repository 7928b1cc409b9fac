#!/usr/bin/env bash
# Builds the Debian package: target/debian/zring_<version>_<arch>.deb (its path is printed).
#
#   scripts/package-deb.sh                   release build, then the package
#   scripts/package-deb.sh --binary PATH     package an already built zring (tests/package.rs)
#   scripts/package-deb.sh --out DIR         write the .deb into DIR
#
# dpkg-deb from a staged tree, not cargo-deb: dpkg-deb is on every Debian machine (cargo-deb
# would be one more crate to compile, minutes on a small box), and the maintainer scripts
# are ours either way. Dependencies come from dpkg-shlibdeps (dpkg-dev), as in a Debian build.
# Contents: /usr/bin/zring; /usr/libexec/zring/mongrel2 (the `mongrel2` name for Pushpin's
# mongrel2_bin= and m2sh, without taking /usr/bin/mongrel2 from mongrel2-core); the units
# zring.service and zring.socket; /etc/zring/zring.conf (a conffile); the system user
# (sysusers.d); the sysctls of docs/tuning.md (sysctl.d); a man page made from `--help`,
# the help text and the operations docs in /usr/share/doc/zring. The maintainer scripts are
# packaging/debian/ (docs/operations.md, "Install from the .deb").
set -euo pipefail
cd "$(dirname "$0")/.."
binary=
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh package
if [ -z "$binary" ]; then
  cargo build --release --bin zring
  binary=target/release/zring
fi
[ -x "$binary" ] || { echo "package-deb: $binary is not an executable" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "package-deb: no version in Cargo.toml" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/zring-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/zring
doc=$root/usr/share/doc/zring
install -d -m 755 "$root/DEBIAN" "$doc" "$root/usr/share/man/man1" "$root/usr/libexec/zring"
# Debug info stripped (the symbol table stays, for backtraces); 0755 root:root.
install -m 755 "$binary" "$root/usr/bin/zring" -D
strip --strip-debug "$root/usr/bin/zring"
ln -s ../../bin/zring "$root/usr/libexec/zring/mongrel2"
install -D -m 644 packaging/systemd/zring.service "$root/lib/systemd/system/zring.service"
install -D -m 644 packaging/systemd/zring.socket "$root/lib/systemd/system/zring.socket"
install -D -m 644 packaging/zring.conf "$root/etc/zring/zring.conf"
install -D -m 644 packaging/sysusers.conf "$root/usr/lib/sysusers.d/zring.conf"
install -D -m 644 packaging/sysctl.conf "$root/usr/lib/sysctl.d/60-zring.conf"

# Documentation: the help text as the binary prints it, and a man page made of it.
"$binary" --help >"$doc/zring-help.txt"
grep -q -- '--takeover-socket' "$doc/zring-help.txt" || { echo "package-deb: $binary --help looks wrong" >&2; exit 1; }
install -m 644 README.md "$doc/README.md"
install -m 644 docs/operations.md docs/mongrel2.md docs/tuning.md "$doc/"
{
  echo ".TH ZRING 1 \"\" \"zring $version\" \"User Commands\""
  echo '.SH NAME'
  echo 'zring \- connection manager: HTTP/1.x and WebSocket clients to ZHTTP and Mongrel2 handlers over ZeroMQ'
  echo '.SH SYNOPSIS'
  echo '.B zring'
  echo '[\fIOPTIONS\fR]'
  echo '.br'
  echo '.B mongrel2'
  echo '\fICONFIG.sqlite\fR \fISERVER_UUID\fR'
  echo '.SH OPTIONS'
  echo '.nf'
  # roff: backslashes escaped, a line's leading dot or quote made literal.
  sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/" "$doc/zring-help.txt"
  echo '.fi'
  echo '.SH FILES'
  echo '/etc/zring/zring.conf, /lib/systemd/system/zring.service, /lib/systemd/system/zring.socket'
  echo '.SH SEE ALSO'
  echo '/usr/share/doc/zring/operations.md'
} | gzip -9n >"$root/usr/share/man/man1/zring.1.gz"
cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zring

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 644 "$doc"/*

# Control files. Depends: what the binary links (dpkg-shlibdeps reads a debian/control).
mkdir -p "$stage/src/debian"
printf 'Source: zring\n\nPackage: zring\nArchitecture: any\n' >"$stage/src/debian/control"
shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O "$root/usr/bin/zring" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package-deb: dpkg-shlibdeps found no dependency" >&2; exit 1; }
install -m 755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
echo /etc/zring/zring.conf >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: zring
Version: $version
Architecture: $arch
Maintainer: ${ZRING_MAINTAINER:-zring developers <zring@localhost>}
Installed-Size: $size
Depends: $shlibs, init-system-helpers, systemd | systemd-sysusers
Suggests: pushpin
Section: net
Priority: optional
Description: connection manager: HTTP/1.x and WebSocket to ZeroMQ handlers
 zring accepts HTTP/1.x and WebSocket connections (and TLS) and hands each
 request or WebSocket session to handler processes over ZeroMQ, as ZHTTP
 (Condure's and Pushpin's protocol, drop-in for Condure) or as Mongrel2's
 protocol (Mongrel2 configs and handlers unchanged). io_uring, with an
 epoll fallback. Runs as a systemd service with socket activation.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's| \./| |') >"$root/DEBIAN/md5sums"
mkdir -p "$out"
deb=$out/zring_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
