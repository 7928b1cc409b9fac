#!/usr/bin/env bash
# The one install step of the scripts, for Debian 12 with Rust (stable) and nothing else:
#   scripts/setup.sh         what building and running zring needs (run-example.sh)
#   scripts/setup.sh test    everything scripts/test.sh needs: Condure, Pushpin, Mongrel2, the
#                            Python and node clients, curl, wrk, openssl, nginx, iproute2, rustfmt,
#                            clippy, cargo-fuzz
#   scripts/setup.sh fuzz    cargo-fuzz only (fuzz-smoke.sh)
#   scripts/setup.sh hostile what scripts/hostile.sh needs: Condure, slowhttptest, curl
#   scripts/setup.sh package what scripts/package-deb.sh needs: dpkg-dev (dpkg-shlibdeps)
#   scripts/setup.sh pushpin-latest  what scripts/pushpin-latest.sh needs to build Pushpin 2.0
#                            from source (Qt 6, qmake6, Boost, libzmq, OpenSSL) and run its checks
#   scripts/setup.sh client-bench    what scripts/client-bench.sh needs: zurl, the WebSocket origin
# Installs only what is missing, so a second run is a quiet no-op. apt-get needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-build}
case "$what" in
  build | test | fuzz | hostile | package | pushpin-latest | client-bench) ;;
  *) echo "usage: $0 [build|test|fuzz|hostile|package|pushpin-latest|client-bench]" >&2; exit 2 ;;
esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "setup: needs root for: $*" >&2; exit 1
  fi
}

# Debian packages not installed yet ("ii": `dpkg -s` also succeeds for removed packages
# whose config files remain); `apt-get update` at most once per run.
apt_updated=
apt_install() {
  local p missing=()
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  echo "setup: apt-get install ${missing[*]}"
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Pushpin's and nginx's packages may start a system instance; the scripts start their own.
  if [[ " ${missing[*]} " == *" pushpin "* ]]; then
    as_root systemctl stop pushpin >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    as_root systemctl stop nginx >/dev/null 2>&1 || as_root invoke-rc.d nginx stop >/dev/null 2>&1 || true
  fi
}

fuzz_tools() {
  # cargo-fuzz runs on stable here with RUSTC_BOOTSTRAP=1 (fuzz-smoke.sh sets it).
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "setup: cargo install cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz
  fi
}

# Building: gcc for ring's C, g++ for libzmq (the zmq crate compiles it from source, see
# Cargo.toml: no libzmq3-dev or pkg-config) and libFuzzer. openssl makes run-example.sh's
# TLS certificate.
build_pkgs=(gcc g++ openssl)
# scripts/package-deb.sh: dpkg-shlibdeps (dpkg-dev), strip (binutils, with gcc).
package_pkgs=(dpkg-dev)
case "$what" in
  build) apt_install "${build_pkgs[@]}"; exit 0 ;;
  fuzz) apt_install "${build_pkgs[@]}"; fuzz_tools; exit 0 ;;
  # The attack side of scripts/hostile.sh (slow headers, body, read) and its peer.
  hostile) apt_install "${build_pkgs[@]}" condure slowhttptest curl; exit 0 ;;
  package) apt_install "${build_pkgs[@]}" "${package_pkgs[@]}"; exit 0 ;;
  # Pushpin 2.0's build (its build.rs runs qmake6 over the C++ half, which needs Qt 6 and
  # Boost headers; its Rust half links the system libzmq and OpenSSL through pkg-config) and
  # the origin and clients of the checks (Python with Debian's websockets).
  pushpin-latest)
    apt_install "${build_pkgs[@]}" qt6-base-dev qmake6 libboost-dev libzmq3-dev libssl-dev \
      pkg-config make python3-websockets curl
    exit 0 ;;
  # zurl 1.11 side by side with zring; the WebSocket origin of the idle-memory figure.
  client-bench) apt_install "${build_pkgs[@]}" zurl python3-websockets; exit 0 ;;
esac

# test: the peers (pushpin brings condure, zurl and mongrel2-core; named so a removed one
# comes back), the Python clients for /usr/bin/python3 (prometheus-client: the real
# Prometheus text parser of tests/metrics.rs), and the load and HTTP tools (systemd for
# systemd-socket-activate: tests/restart.rs's socket activation; nothing is started; and for
# tests/package.rs: systemd-analyze, systemd-sysusers, with init-system-helpers'
# deb-systemd-helper, which the package's postinst runs), nginx
# (scripts/bench-tls.sh's TLS terminator to compare with, run with its own config) and
# iproute2 (scripts/cluster.sh --netns: network namespaces, veth pairs, a bridge).
apt_install "${build_pkgs[@]}" "${package_pkgs[@]}" init-system-helpers condure pushpin zurl mongrel2-core python3-zmq python3-websocket \
  python3-prometheus-client \
  python3-websockets curl wrk systemd nginx iproute2
# node + npm for the node `ws` client: the machine image may have Node 20 with npm (not from
# Debian's packages, which conflict with it), so Debian's only when npm is absent.
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
# That client's locked dependencies, again only when the install is older than the lock file
# or does not load (npm 9 once reported success with files missing after a failed fetch: so
# check, and try twice).
node=tests/ws_clients/node
node_ok() {
  [ "$node/node_modules/.package-lock.json" -nt "$node/package-lock.json" ] &&
    (cd "$node" && node -e "require('ws')" >/dev/null 2>&1)
}
for _ in 1 2; do
  node_ok && break
  echo "setup: npm ci in $node"
  npm ci --no-audit --no-fund --prefix "$node" >/dev/null || true
done
node_ok || { echo "setup: npm ci in $node failed" >&2; exit 1; }
# A Mongrel2 handler library from PyPI on Python 3 (tests/m2_pypi.rs): uWSGI with its mongrel2
# plugin built in (UWSGI_EMBED_PLUGINS; pip compiles it: python3-dev for Python.h, libzmq3-dev
# for the plugin), in a venv of Debian's python3 outside the work tree so fresh clones reuse
# it. No pip cache: a cached wheel built without the plugin must not be reused.
m2_pypi=/opt/zring-test/m2-pypi
# (Its help captured whole, not piped into `grep -q`: pipefail would see a SIGPIPE'd uwsgi.)
m2_pypi_ok() { [[ "$("$m2_pypi/bin/uwsgi" --help 2>/dev/null)" == *--zeromq* ]]; }
if ! m2_pypi_ok; then
  apt_install python3-venv python3-dev libzmq3-dev
  echo "setup: pip install uwsgi (mongrel2 plugin) into $m2_pypi"
  as_root rm -rf "$m2_pypi"
  as_root /usr/bin/python3 -m venv "$m2_pypi"
  as_root env UWSGI_EMBED_PLUGINS=mongrel2 "$m2_pypi/bin/pip" install --quiet --no-cache-dir uwsgi==2.0.31
  m2_pypi_ok || { echo "setup: uwsgi in $m2_pypi has no mongrel2 plugin" >&2; exit 1; }
fi
# test.sh's formatting and lint steps (a minimal rustup profile has neither).
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || { echo "setup: rustup component add $c"; rustup component add "$c"; }
done
fuzz_tools
