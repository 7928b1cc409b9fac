#!/usr/bin/env bash
# HTTP keep-alive throughput, side by side in one run: zring (io_uring), zring (epoll) and
# Condure 1.9.1, each in front of the same example handler, measured with
#   wrk -t$THREADS -c$CONNS -d$SECS http://127.0.0.1:PORT/hello
# Prints req/s for each and the ratios. Defaults: 2 threads, 64 connections, 10 s.
# ZRING_BASELINE=DIR also runs DIR/zring (an older build) on both runtimes, each right after
# the current build on the same runtime, and prints current/baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} CONNS=${CONNS:-64} SECS=${SECS:-10} WORKERS=${WORKERS:-2}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
command -v condure >/dev/null || { echo "condure is required (apt-get install condure)"; exit 1; }
cargo build --release --bins -q
dir=$(mktemp -d /tmp/zring-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

wait_ok() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1"; exit 1; }

run_one() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 & local cm=$!
  target/release/zring-example-handler --stream "ipc://$dir/$name" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok "$port"
  local rps
  rps=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$port/hello" | awk '/Requests\/sec/ {print $2}')
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  echo "$rps"
}

zu=$(run_one zu 18100 target/release/zring --runtime uring --workers "$WORKERS" --listen 127.0.0.1:18100 --zclient-stream "ipc://$dir/zu")
base=${ZRING_BASELINE:-}
[ -n "$base" ] && bu=$(run_one bu 18103 "$base/zring" --runtime uring --workers "$WORKERS" --listen 127.0.0.1:18103 --zclient-stream "ipc://$dir/bu")
ze=$(run_one ze 18101 target/release/zring --runtime epoll --workers "$WORKERS" --listen 127.0.0.1:18101 --zclient-stream "ipc://$dir/ze")
[ -n "$base" ] && be=$(run_one be 18104 "$base/zring" --runtime epoll --workers "$WORKERS" --listen 127.0.0.1:18104 --zclient-stream "ipc://$dir/be")
co=$(run_one co 18102 condure --workers "$WORKERS" --listen 127.0.0.1:18102 --zclient-stream "ipc://$dir/co")

printf '\nwrk -t%s -c%s -d%ss /hello, example handler, %s workers\n' "$THREADS" "$CONNS" "$SECS" "$WORKERS"
printf '%-16s %12s\n' "zring io_uring" "$zu" "zring epoll" "$ze" "condure 1.9.1" "$co"
awk -v a="$zu" -v b="$ze" -v c="$co" 'BEGIN { printf "ratio zring(io_uring)/condure: %.2fx\nratio zring(epoll)/condure:    %.2fx\nratio io_uring/epoll:          %.2fx\n", a/c, b/c, a/b }'
if [ -n "$base" ]; then
  printf '%-16s %12s\n' "baseline uring" "$bu" "baseline epoll" "$be"
  awk -v a="$zu" -v b="$bu" -v c="$ze" -v d="$be" 'BEGIN { printf "ratio current/baseline io_uring: %.2fx\nratio current/baseline epoll:    %.2fx\n", a/b, c/d }'
fi
