#!/usr/bin/env bash
# Fan-out latency: N idle WebSocket clients on /ws/broadcast, the example handler
# broadcasting one stamped message to all of them (list-form packets of 128 ids) K times,
# each client timing receipt - handler send; and the floor in the same run, measured first
# (the same frame written by zring-load itself to N loopback pairs of its own with batched
# io_uring sends; those pairs are closed before the server's clients connect, so the box
# never holds more than N pairs).
#
#   scripts/fanout.sh --clients N [--rounds K] [--idle M] [--server zring|condure|mongrel2|zring-m2]
#                     [--payload BYTES] [--rate CONNECTS_PER_SEC] [--results FILE]
#                     [--dist FILE.csv] [--no-floor] [--floor-threads K] [--deflate] [--tls]
#
# --deflate: the server runs with --compression (zring: --compression-context shared, its
# default, unless ZRING_ARGS says otherwise) and every client offers permessage-deflate as
# browsers do, inflates every message and checks its text; the floor sends the same
# message compressed once (RSV1). --tls: the clients connect with TLS (rustls, full
# handshakes) to a second listener with a throwaway certificate (openssl, a CA and a leaf
# for localhost), the trigger POST stays plain; the floor's pairs carry TLS too (zring's own
# TLS session and configuration on the server side, with the same certificate, so the same
# suite: tls_suite and floor_tls_suite say which), their handshakes done before the rounds,
# and each round the floor seals the frame once per client into a record.
#
# --floor-threads K runs the floor's sender in K threads of its own (as a server's workers
# are apart from its clients, so it pays for waking them); by default it sends from the
# client threads themselves.
#
# --idle M adds M more WebSocket clients on /ws (not broadcast members) that stay connected
# while the N members are fanned out to: the "100,000 of a million" case.
#
# Prints one key=value line: fanout_p50_ms, fanout_p99_ms, fanout_p100_ms, floor_p100_ms,
# ratio_p100 (fan-out p100 / floor p100), and what happened (connected, missed, server
# state: a server that crashed is reported as such; server_rss_kb, its RSS after the
# rounds). --results appends the line to FILE, --dist appends latency percentiles as CSV
# for scripts/plot.py.
# Sets sysctls for the run (scripts/load-lib.sh, docs/tuning.md) and restores them on exit.
# Env: SERVER, WORKERS, RUNTIME, ZRING_ARGS, ZRING_BIN, ZRING_WRAP (scripts/load-lib.sh),
# PROFILE=debug, KEEP_LOGS=1, PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=2000 IDLE=0 ROUNDS=5 SERVER=${SERVER:-zring} PAYLOAD=64 RATE=20000 RESULTS= DIST= FLOOR=--floor-first FLOOR_THREADS=0
DEFLATE= TLS=
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --dist) DIST=$2; shift 2 ;;
    --no-floor) FLOOR=; shift ;;
    --floor-threads) FLOOR_THREADS=$2; shift 2 ;;
    --deflate) DEFLATE=1; shift ;;
    --tls) TLS=1; shift ;;
    *) echo "usage: $0 --clients N [--rounds K] [--idle M] [--server zring|condure|mongrel2|zring-m2] [--payload B] [--rate R] [--results FILE] [--dist FILE] [--no-floor] [--floor-threads K] [--deflate] [--tls]" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
load_sysctls
load_build
PORT=${PORT:-$(free_port)}
TOTAL=$(( CLIENTS + IDLE ))
target=$PORT client_args=()
if [ -n "$DEFLATE" ]; then export DEFLATE; client_args+=(--deflate); fi
if [ -n "$TLS" ]; then
  make_tls_ids
  TLS_PORT=$(free_port); export TLS_PORT
  target=$TLS_PORT client_args+=(--tls --ca "$TLS_CA")
  [ -n "$FLOOR" ] && client_args+=(--floor-identities "$LOAD_DIR/ids")
fi
start_server "$SERVER" "$PORT" "$TOTAL"

# Bounded: connecting at ≥ ~300/s (zring's io_uring runtime today), plus the rounds.
max_secs=$(( TOTAL / 150 + ROUNDS * 25 + 120 ))
# A TLS floor's handshakes (both ends here) at ≥ ~300/s too.
[ -n "$TLS" ] && [ -n "$FLOOR" ] && max_secs=$(( max_secs + CLIENTS / 150 ))
dist_args=()
[ -n "$DIST" ] && dist_args=(--dist "$DIST")
set +e
line=$("$BIN/zring-load" --mode ws --clients "$TOTAL" --members "$CLIENTS" --rate "$RATE" --target "127.0.0.1:$target" \
  --path /ws/broadcast --fanout-trigger "http://127.0.0.1:$PORT/broadcast" --rounds "$ROUNDS" \
  --payload "$PAYLOAD" $FLOOR --floor-threads "$FLOOR_THREADS" --label "$SERVER" --max-secs "$max_secs" --connect-timeout 60 --inflight 128 \
  "${client_args[@]}" "${dist_args[@]}" 2>"$LOAD_DIR/load.err")
rc=$?
set -e
# The server's RSS after the rounds: what the broadcasts left resident (pooled buffers,
# allocator arenas), with the clients gone.
server_rss_kb=$(rss_kb "$SERVER_PID")
state=$(server_state "$SERVER")
grep -E 'round|FAILED' "$LOAD_DIR/load.err" >&2 || true
if [ -z "$line" ]; then
  echo "zring-load printed nothing (exit $rc): $(tail -n 3 "$LOAD_DIR/load.err")" >&2
  line="mode=ws clients=$CLIENTS status=fail"
fi
keys=(connected failed fanout_p50_ms fanout_p99_ms fanout_p100_ms fanout_missed)
out="test=fanout server=$SERVER clients=$CLIENTS idle=$IDLE rounds=$ROUNDS payload=$PAYLOAD deflate=${DEFLATE:-0} tls=${TLS:-0}"
for k in "${keys[@]}" handler_sent floor_threads floor_p50_ms floor_p99_ms floor_p100_ms ratio_p100 fanout_p100_median_ms floor_p100_median_ms ratio_p100_median fanout_p100_rounds_ms \
  floor_p100_rounds_ms fanout_backlog_drops fanout_retransmits floor_backlog_drops connect_secs floor_connect_secs client_bytes_per_conn \
  tls_suite floor_tls_suite status; do
  v=$(pick "$k" "$line")
  out+=" $k=${v:-na}"
done
out+=" server_rss_kb=$server_rss_kb server_state=$state load_exit=$rc"
echo "$out"
[ -n "$RESULTS" ] && echo "$out" >>"$RESULTS"
[ "$rc" = 0 ] && [ "$state" = alive ]
