#!/usr/bin/env bash
# User-space memory per idle keep-alive connection, zring (io_uring and epoll) vs Condure
# 1.9.1 in one run: N clients (default 15,000; the fd limit here is 20,000 per process)
# each make one request to the example handler and then stay connected and idle.
# Prints RSS before and after and the difference per connection.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-15000}
cargo build --release --bins -q
dir=$(mktemp -d /tmp/zring-idle.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_ok() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1"; exit 1; }

measure() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 & local cm=$!
  target/release/zring-example-handler --stream "ipc://$dir/$name" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok "$port"
  local before after
  before=$(rss_kb "$cm")
  mkfifo "$dir/$name.in"
  /usr/bin/python3 scripts/idle_clients.py 127.0.0.1 "$port" "$N" <"$dir/$name.in" >"$dir/$name.out" & local c=$!
  exec 9>"$dir/$name.in"
  for _ in $(seq 600); do grep -q ready "$dir/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$dir/$name.out" || { echo "$name: clients did not get ready"; cat "$dir/$name.out"; exit 1; }
  sleep 1
  after=$(rss_kb "$cm")
  exec 9>&-
  wait "$c" 2>/dev/null || true
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  printf '%-16s RSS before %8s KiB, with %s idle: %8s KiB, per connection: %6s B\n' \
    "$name" "$before" "$N" "$after" "$(( (after - before) * 1024 / N ))"
}

max=$(( N + 100 ))
measure "zring-uring" 18200 target/release/zring --runtime uring --stream-maxconn "$max" --listen 127.0.0.1:18200 --zclient-stream "ipc://$dir/zring-uring"
measure "zring-epoll" 18201 target/release/zring --runtime epoll --stream-maxconn "$max" --listen 127.0.0.1:18201 --zclient-stream "ipc://$dir/zring-epoll"
measure "condure" 18202 condure --stream-maxconn "$max" --listen 127.0.0.1:18202 --zclient-stream "ipc://$dir/condure"
