#!/usr/bin/env bash
# What a Prometheus scrape costs with no connections and with N idle ones: zring (io_uring,
# 2 workers) with --prometheus and the example handler; SCRAPES timed scrapes of /metrics
# (zring's render time as it reports it, and curl's total time: connect, render, transfer
# over loopback) first with no client, then
# while zring-load holds N idle WebSockets (default 100,000; --clients 1000000 for the
# million). Counters are kept as things happen and a scrape sums a fixed set of them per
# worker (src/metrics), so both rows should match.
#   scripts/scrape-cost.sh [--clients N] [--scrapes K] [--results FILE]
# Prints one key=value line per size.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=100000 SCRAPES=200 RESULTS=
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --scrapes) SCRAPES=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--scrapes K] [--results FILE]" >&2; exit 2 ;;
  esac
done
source scripts/load-lib.sh
load_sysctls
load_build
PORT=$(free_port)
MPORT=$(free_port)
ZRING_ARGS="--prometheus 127.0.0.1:$MPORT" start_server zring "$PORT" "$CLIENTS"

# stats FILE: p50, p90, max and mean of the numbers in FILE (one a line), as key=value.
stats() {
  sort -n "$1" | awk -v k="$2" '
    { t[NR] = $1; sum += $1 }
    END { printf "%s_p50=%.1f %s_p90=%.1f %s_max=%.1f %s_mean=%.1f", k, t[int(NR * 0.5) + 1], k, t[int(NR * 0.9) + 1], k, t[NR], k, sum / NR }'
}

# timed HELD: SCRAPES scrapes; prints the key=value line for this size. Each scrape reports
# the previous one's render time (connmgr_metrics_render_seconds): zring's own cost, without
# the loopback round trip and the curl process.
timed() {
  local held=$1 body=$LOAD_DIR/body times=$LOAD_DIR/times render=$LOAD_DIR/render
  : >"$times"; : >"$render"
  for _ in $(seq "$SCRAPES"); do
    curl -s -o "$body" -w '%{time_total}\n' "http://127.0.0.1:$MPORT/metrics" | awk '{ print $1 * 1e6 }' >>"$times"
    awk '/^connmgr_metrics_render_seconds / { print $2 * 1e6 }' "$body" >>"$render"
  done
  sed -i 1d "$render" # the first scrape shows the one before this run
  local open bytes line
  open=$(awk '/^connmgr_connections\{/ { n += $2 } END { print n + 0 }' "$body")
  bytes=$(wc -c <"$body")
  line="test=scrape_cost held=$held open_gauge=$open scrapes=$SCRAPES body_bytes=$bytes"
  line+=" $(stats "$render" render_us) $(stats "$times" curl_us) server_rss_kb=$(rss_kb "$SERVER_PID")"
  echo "$line"
  [ -z "$RESULTS" ] || echo "$line" >>"$RESULTS"
}

timed 0
hold=$(( CLIENTS / 10000 + 60 ))
"$BIN/zring-load" --mode ws --path /ws --clients "$CLIENTS" --rate 20000 --target "127.0.0.1:$PORT" \
  --hold "$hold" --label zring --max-secs $(( CLIENTS / 150 + hold + 120 )) --connect-timeout 60 \
  --inflight 128 >"$LOAD_DIR/load.out" 2>"$LOAD_DIR/load.err" &
load_pid=$!
LOAD_PIDS+=("$load_pid")
while kill -0 "$load_pid" 2>/dev/null && ! grep -q 'phase=connected' "$LOAD_DIR/load.err"; do sleep 0.5; done
connected=$(sed -n 's/.*phase=connected connected=\([0-9]*\).*/\1/p' "$LOAD_DIR/load.err")
sleep 2
timed "${connected:-0}"
kill "$load_pid" 2>/dev/null || true
