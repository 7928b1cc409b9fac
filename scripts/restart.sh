#!/usr/bin/env bash
# Restart under load: two wrk loads, keep-alive and one connection per request
# (`Connection: close`), run against zring while RESTARTS (default 3) new zrings take over
# one after another (`--takeover`), one every INTERVAL seconds (default 5), with the example
# handler behind them.
#
# Prints one key=value line per handover (how long the new zring took from its start to
# serving with the old one told to drain, from its log; how long the old one then took to
# drain and exit) and one per load (wrk's requests, socket errors and non-2xx responses:
# zero errors is the goal).
#
#   scripts/restart.sh                           # release build, io_uring, 3 takeovers
#   RUNTIME=epoll RESTARTS=10 INTERVAL=2 scripts/restart.sh
#   PROFILE=debug scripts/restart.sh             # the binaries `cargo test` built
#   MODE=stop-start scripts/restart.sh           # for comparison: no takeover; SIGTERM the
#                                                # old one, wait for its exit, start a new one
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/load-lib.sh
RUNTIME=${RUNTIME:-uring}
RESTARTS=${RESTARTS:-3}
INTERVAL=${INTERVAL:-5}
CONNS=${CONNS:-32}
WORKERS=${WORKERS:-2}
MODE=${MODE:-takeover}
case "$MODE" in takeover | stop-start) ;; *) echo "MODE is takeover or stop-start" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "restart.sh: needs wrk (scripts/setup.sh test)" >&2; exit 1; }
load_build
load_sysctls
port=$(free_port)
dir=$LOAD_DIR
base=ipc://$dir/z

"$BIN/zring-example-handler" --stream "$base" --reconnect-ms 5 >"$dir/handler.log" 2>&1 &
LOAD_PIDS+=($!)

# start_zring NAME [FLAGS...]: starts one generation; its pid in ZRING_PID.
start_zring() {
  local name=$1
  shift
  "$BIN/zring" --runtime "$RUNTIME" --listen "127.0.0.1:$port" --zclient-stream "$base" \
    --workers "$WORKERS" --takeover-socket "$dir/takeover.sock" "$@" >"$dir/$name.log" 2>&1 &
  ZRING_PID=$!
  LOAD_PIDS+=("$ZRING_PID")
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

start_zring zring-0
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/hello" >/dev/null 2>&1 && break
  sleep 0.05
done
curl -sf "http://127.0.0.1:$port/hello" >/dev/null || { echo "zring did not start" >&2; cat "$dir/zring-0.log" >&2; exit 1; }

seconds=$(( INTERVAL * (RESTARTS + 1) ))
wrk -t1 -c"$CONNS" -d"${seconds}s" --timeout 10s "http://127.0.0.1:$port/hello" >"$dir/wrk-keepalive.txt" 2>&1 &
wrk_keepalive=$!
wrk -t1 -c"$CONNS" -d"${seconds}s" --timeout 10s -H 'Connection: close' \
  "http://127.0.0.1:$port/hello" >"$dir/wrk-close.txt" 2>&1 &
wrk_close=$!

old=$ZRING_PID
for i in $(seq "$RESTARTS"); do
  sleep "$INTERVAL"
  t0=$(now_ms)
  if [ "$MODE" = takeover ]; then
    start_zring "zring-$i" --takeover
  else
    kill -TERM "$old"
  fi
  new=$ZRING_PID
  # The old one drains, then exits (bounded: --shutdown-timeout is 10 s).
  for _ in $(seq 300); do kill -0 "$old" 2>/dev/null || break; sleep 0.01; done
  t1=$(now_ms)
  if [ "$MODE" = stop-start ]; then
    start_zring "zring-$i"
    new=$ZRING_PID
  fi
  status=exited
  kill -0 "$old" 2>/dev/null && status=running
  serving=$(grep -o 'the old zring drains ([0-9]* ms after start)' "$dir/zring-$i.log" | grep -o '[0-9]*' || echo none)
  echo "test=restart mode=$MODE runtime=$RUNTIME handover=$i new_serving_ms=$serving old_exit_ms=$((t1 - t0)) old=$status"
  old=$new
done

wait "$wrk_keepalive" "$wrk_close" || true
for load in keepalive close; do
  f=$dir/wrk-$load.txt
  requests=$(awk '/ requests in /{print $1}' "$f")
  errors=$(awk '/Socket errors/{gsub(",", ""); s=0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s}' "$f")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$f")
  rps=$(awk '/Requests\/sec/{print $2}' "$f")
  latency_max=$(awk '$1 == "Latency" {print $4}' "$f")
  echo "test=restart mode=$MODE runtime=$RUNTIME load=$load conns=$CONNS seconds=$seconds restarts=$RESTARTS requests=$requests socket_errors=${errors:-0} non_2xx=${non2xx:-0} rps=$rps latency_max=$latency_max"
done
