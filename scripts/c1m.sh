#!/usr/bin/env bash
# A million idle WebSocket connections (or --clients N) held by one connection manager on
# this box, with the example handler behind it and zring-load on the client side.
#
#   scripts/c1m.sh [--clients N] [--hold SECS] [--server zring|condure|mongrel2|zring-m2]
#                  [--mode ws|http] [--settle SECS] [--rate R] [--results FILE] [--deflate] [--tls]
#
# --deflate: the server runs with --compression and the clients offer permessage-deflate (the
# idle memory of compressed connections). --tls (ws mode): the clients connect with TLS to
# a second listener with a throwaway certificate (a CA and a leaf for localhost, openssl);
# the RSS per connection then includes the server's idle TLS sessions.
#
# --mode http holds plain HTTP keep-alive clients instead (one GET /hello each, then idle).
# --settle: seconds between the last client connecting and the RSS sample (default 2; zring
# returns a burst's freed heap pages every 10 s, so 11 gives its steady figure).
#
# Prints one key=value line: connections held, time to connect them all, the server's user
# RSS per connection (RSS growth / held), kernel slab per connection (growth of the socket
# slab caches in /proc/slabinfo / held, and of all of Slab in /proc/meminfo as
# slab_total_per_conn_b; both count both ends of each loopback pair, client and server, as
# both are on this box, and other programs' churn shows in them), the handler's keep-alive packets per second from the server (and ids per second),
# and the time for a fresh `curl` request answered while they are all connected.
# Sets sysctls for the run (scripts/load-lib.sh, docs/tuning.md) and restores them on exit.
# Env: SERVER, WORKERS, RUNTIME, ZRING_ARGS, PROFILE=debug, KEEP_LOGS=1, PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=1000000 HOLD= SERVER=${SERVER:-zring} RATE=20000 RESULTS= MODE=ws SETTLE=2 DEFLATE= TLS=
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --deflate) DEFLATE=1; shift ;;
    --tls) TLS=1; shift ;;
    *) echo "usage: $0 [--clients N] [--hold SECS] [--server zring|condure|mongrel2|zring-m2] [--mode ws|http] [--settle S] [--rate R] [--results FILE] [--deflate] [--tls]" >&2; exit 2 ;;
  esac
done
# The hold covers a full keep-alive cycle (zring and Condure visit every session every 45 s)
# unless told otherwise.
HOLD=${HOLD:-60}
case "$MODE" in
  ws) mode_args=(--mode ws --path /ws/broadcast) ;;
  http) mode_args=(--mode http --http-get --path /hello) ;;
  *) echo "--mode is ws or http" >&2; exit 2 ;;
esac
# The RSS sample is taken within the hold.
[ "$HOLD" -gt "$SETTLE" ] || HOLD=$(( SETTLE + 1 ))
# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
load_sysctls
load_build
PORT=${PORT:-$(free_port)}
target=$PORT client_args=()
if [ -n "$DEFLATE" ]; then export DEFLATE; client_args+=(--deflate); fi
if [ -n "$TLS" ]; then
  [ "$MODE" = ws ] || { echo "--tls needs --mode ws" >&2; exit 2; }
  make_tls_ids
  TLS_PORT=$(free_port); export TLS_PORT
  target=$TLS_PORT client_args+=(--tls --ca "$TLS_CA")
fi
start_server "$SERVER" "$PORT" "$CLIENTS"
sleep 1
rss0=$(rss_kb "$SERVER_PID")
slab0=$(slab_kb)
sslab0=$(sock_slab_kb)

max_secs=$(( CLIENTS / 150 + HOLD + 120 ))
"$BIN/zring-load" "${mode_args[@]}" --clients "$CLIENTS" --rate "$RATE" --target "127.0.0.1:$target" \
  --hold "$HOLD" --label "$SERVER" --max-secs "$max_secs" --connect-timeout 60 --inflight 128 "${client_args[@]}" \
  >"$LOAD_DIR/load.out" 2>"$LOAD_DIR/load.err" &
load_pid=$!
LOAD_PIDS+=("$load_pid")

# Wait (bounded by zring-load's own --max-secs) for every client to be settled.
while kill -0 "$load_pid" 2>/dev/null && ! grep -q 'phase=connected' "$LOAD_DIR/load.err"; do sleep 0.5; done
held_at=$(date +%s.%N)
sleep "$SETTLE" # let the last handshakes' buffers settle
rss1=$(rss_kb "$SERVER_PID")
slab1=$(slab_kb)
sslab1=$(sock_slab_kb)
connected=$(sed -n 's/.*phase=connected connected=\([0-9]*\).*/\1/p' "$LOAD_DIR/load.err")
connected=${connected:-0}

# A fresh client while they are all connected: bounded at 10 s.
fresh=$(curl -s -o /dev/null -m 10 -w '%{http_code} %{time_total}' "http://127.0.0.1:$PORT/hello" || echo "000 10")
fresh_code=${fresh% *}
fresh_ms=$(awk -v t="${fresh#* }" 'BEGIN { printf "%.2f", t * 1000 }')

# Keep-alives from the server to the handler over the hold: the handler's running totals
# (one line every STATS_SECS) from the first line after all were connected to the last.
wait "$load_pid" && rc=0 || rc=$?
state=$(server_state "$SERVER")
line=$(cat "$LOAD_DIR/load.out")
grep FAILED "$LOAD_DIR/load.err" >&2 || true
# The handler's window: from the stats line nearest the moment all were held to its last.
held_rel=$(awk -v a="$held_at" -v b="$HANDLER_START" 'BEGIN { print a - b }')
read -r ka_pps ka_ids_ps < <(awk -v from="$held_rel" '
  /^handler_stats/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["secs"] + 0 >= from && !got) { got = 1; s0 = v["secs"]; p0 = v["in_keepalive_packets"]; d0 = v["in_keepalive_ids"] }
    s1 = v["secs"]; p1 = v["in_keepalive_packets"]; d1 = v["in_keepalive_ids"] }
  END { if (got && s1 > s0) printf "%.1f %.0f\n", (p1 - p0) / (s1 - s0), (d1 - d0) / (s1 - s0); else print "na na" }' \
  "$LOAD_DIR/handler.log")
per_conn() { awk -v a="$1" -v b="$2" -v n="$connected" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "na" }'; }
out="test=c1m server=$SERVER mode=$MODE deflate=${DEFLATE:-0} tls=${TLS:-0} clients=$CLIENTS held=$connected"
for k in failed connect_secs connect_rate; do v=$(pick "$k" "$line"); out+=" $k=${v:-na}"; done
out+=" server_rss_kb=$rss1 server_rss_per_conn_b=$(per_conn "$rss0" "$rss1") slab_per_conn_b=$(per_conn "$sslab0" "$sslab1")"
out+=" slab_total_per_conn_b=$(per_conn "$slab0" "$slab1")"
out+=" handler_keepalive_pps=$ka_pps handler_keepalive_ids_ps=$ka_ids_ps fresh_request_code=$fresh_code fresh_request_ms=$fresh_ms"
for k in client_bytes_per_conn closed status; do v=$(pick "$k" "$line"); out+=" load_$k=${v:-na}"; done
out+=" server_state=$state load_exit=$rc"
echo "$out"
[ -n "$RESULTS" ] && echo "$out" >>"$RESULTS"
[ "$rc" = 0 ] && [ "$state" = alive ] && [ "$fresh_code" = 200 ]
