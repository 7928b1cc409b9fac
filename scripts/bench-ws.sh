#!/usr/bin/env bash
# WebSocket echo throughput, side by side in one run: zring (io_uring), zring (epoll) and
# Condure 1.9.1, each in front of the same example handler (/ws echo), measured with
#   zring-ws-load --conns $CONNS --secs $SECS --size $SIZE --threads $THREADS
# (src/bin/zring-ws-load.rs: $CONNS WebSocket clients, each doing one round trip at a time
# with a $SIZE-byte text message). Prints messages/s for each and the ratios.
# Defaults: 64 connections, 16-byte messages, 10 s, 2 load threads, 2 CM workers, and
# --stream-maxconn $MAXCONN (10000, both managers' default) for every CM.
# A CM that refuses the WebSocket handshake is reported as n/a (zring until its WebSocket
# support lands).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-64} SECS=${SECS:-10} SIZE=${SIZE:-16} THREADS=${THREADS:-2} WORKERS=${WORKERS:-2}
MAXCONN=${MAXCONN:-10000}
command -v condure >/dev/null || { echo "condure is required (apt-get install condure)"; exit 1; }
cargo build --release --bins -q
dir=$(mktemp -d /tmp/zring-bench-ws.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

wait_ok() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1"; exit 1; }

run_one() { # name port cmd...: prints msgs/s, or n/a
  local name=$1 port=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 & local cm=$!
  target/release/zring-example-handler --stream "ipc://$dir/$name" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok "$port"
  local line
  if line=$(target/release/zring-ws-load --port "$port" --conns "$CONNS" --secs "$SECS" --size "$SIZE" --threads "$THREADS" 2>"$dir/$name.load"); then
    echo "$name: $line" >&2
    sed -n 's/.*msgs_per_sec=\([0-9.]*\).*/\1/p' <<<"$line"
  else
    echo "$name: $(head -1 "$dir/$name.load")" >&2
    echo "n/a"
  fi
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
}

zu=$(run_one zu 18110 target/release/zring --runtime uring --workers "$WORKERS" --stream-maxconn "$MAXCONN" --listen 127.0.0.1:18110 --zclient-stream "ipc://$dir/zu")
ze=$(run_one ze 18111 target/release/zring --runtime epoll --workers "$WORKERS" --stream-maxconn "$MAXCONN" --listen 127.0.0.1:18111 --zclient-stream "ipc://$dir/ze")
co=$(run_one co 18112 condure --workers "$WORKERS" --stream-maxconn "$MAXCONN" --listen 127.0.0.1:18112 --zclient-stream "ipc://$dir/co")

printf '\nWebSocket echo, %s connections, %s-byte text messages, %ss, example handler, %s workers, --stream-maxconn %s\n' "$CONNS" "$SIZE" "$SECS" "$WORKERS" "$MAXCONN"
printf '%-16s %12s msgs/s\n' "zring io_uring" "$zu" "zring epoll" "$ze" "condure 1.9.1" "$co"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2fx\n", a/b }'; }
echo "ratio zring(io_uring)/condure: $(ratio "$zu" "$co")"
echo "ratio zring(epoll)/condure:    $(ratio "$ze" "$co")"
echo "ratio io_uring/epoll:          $(ratio "$zu" "$ze")"
