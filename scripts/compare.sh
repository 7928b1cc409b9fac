#!/usr/bin/env bash
# Side by side in one run (issue 7, item 4): zring, Condure 1.9.1 and Mongrel2 1.12.2 on the
# same workloads, one table with ratios. It runs the existing tools, one server at a time:
#
#   idle memory    scripts/c1m.sh --mode http|ws --clients N: user RSS growth per idle
#                  keep-alive connection (one GET each) and per idle WebSocket, held --hold s
#                  (a crash while holding them is the result);
#   fan-out        scripts/fanout.sh --clients N: p50/p99/p100 delivery latency of one stamped
#                  message to N WebSocket clients, K rounds, and the floor's p100 from the
#                  same run. zring and Condure: the example handler's POST /broadcast
#                  (list-form ZHTTP packets of 128 ids); Mongrel2: examples/m2_handler.rs's
#                  POST /broadcast (replies naming up to 128 ids, each a server text frame);
#   HTTP           wrk -t2 -c64 -d S /hello (requests/s);
#   WebSocket      zring-ws-load --conns 64 --secs S (echo messages/s, 16-byte text).
#
# Servers (--servers, comma-separated): zring (io_uring, 2 workers, example ZHTTP handler),
# condure (example handler), mongrel2 (zring-m2-handler), zring-m2 (zring --m2-config in
# front of the same zring-m2-handler as Mongrel2: the like-for-like Mongrel2 comparison).
# Ratios are zring/condure, zring/mongrel2 and zring-m2/mongrel2: for memory and latency
# lower is better, for throughput higher is better.
#
#   scripts/compare.sh [--clients N] [--secs S] [--rounds K] [--hold S] [--settle S]
#                      [--servers LIST] [--results FILE] [--dist FILE.csv]
#
# Defaults: 15,000 clients (the most Condure and Mongrel2 hold per process here: the fd cap
# is 20,000), 10 s per throughput run, 5 fan-out rounds, idle clients held 50 s (a
# keep-alive cycle) and sampled 11 s after the last connected (zring returns a burst's
# heap every 10 s). A server that crashes or fails a workload gets that as its cell
# (`crashed:<first log line>`, `failed:<why>`), never a script error.
# Prints the table, then one key=value line (the last line): <workload>_<server>=value and
# <workload>_ratio_<a>_<b>=ratio. --results appends every cell as a key=value line, and
# c1m.sh's and fanout.sh's own lines (rounds, drops, retransmits); scripts/plot.py --results
# draws memory.svg and compare.svg from it. --dist appends the fan-out distributions
# (scripts/plot.py --dist: fanout-latency.svg). Sets sysctls for the run (scripts/load-lib.sh) and restores them.
# Env: PROFILE=debug (CI), WORKERS, KEEP_LOGS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=15000 SECS=10 ROUNDS=5 HOLD=50 SETTLE=11 SERVERS=zring,condure,mongrel2,zring-m2 RESULTS= DIST=
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --dist) DIST=$2; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--secs S] [--rounds K] [--hold S] [--settle S] [--servers zring,condure,mongrel2,zring-m2] [--results FILE] [--dist FILE]" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a servers <<<"$SERVERS"
for s in "${servers[@]}"; do
  case "$s" in zring | condure | mongrel2 | zring-m2) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
load_sysctls
load_build
export PROFILE
CELLS=$LOAD_DIR/cells
: >"$CELLS"
[ -n "$RESULTS" ] && touch "$RESULTS"
[ -n "$DIST" ] && touch "$DIST"

# cell WORKLOAD SERVER VALUE: one result (a number, or crashed:/failed:/n/a).
cell() {
  echo "$1 $2 $3" >>"$CELLS"
  echo "compare: $1 $2 = $3" >&2
  [ -z "$RESULTS" ] || echo "test=compare workload=$1 server=$2 clients=$CLIENTS value=$3" >>"$RESULTS"
}
# verdict LINE KEYNEEDED ERRFILE: the failure of a sub-run as a cell value, or empty if it
# went well (a run that printed nothing: the last line of its stderr).
verdict() {
  local st
  st=$(pick server_state "$1")
  if [ -z "$1" ]; then echo "failed:$(tail -n 1 "$3" 2>/dev/null | tr -s ' \t=' '___' | cut -c1-80)"
  elif [ -n "$st" ] && [ "$st" != alive ]; then echo "$st"
  elif [ -z "$(pick "$2" "$1")" ] || [ "$(pick "$2" "$1")" = na ]; then echo "failed:$(pick status "$1")"
  fi
}
secs_for() { echo $(( CLIENTS / 100 + $1 + 180 )); } # a bound for one sub-run

# 1. Idle memory per connection.
for mode in http ws; do
  for s in "${servers[@]}"; do
    res=()
    [ -n "$RESULTS" ] && res=(--results "$RESULTS")
    line=$(timeout "$(secs_for $(( HOLD + SETTLE )))" scripts/c1m.sh --server "$s" --mode "$mode" --clients "$CLIENTS" \
      --hold "$HOLD" --settle "$SETTLE" "${res[@]}" 2>"$LOAD_DIR/c1m.$mode.$s.err" | tail -n 1) || true
    bad=$(verdict "$line" server_rss_per_conn_b "$LOAD_DIR/c1m.$mode.$s.err")
    held=$(pick held "$line")
    if [ -z "$bad" ] && [ "${held:-0}" != "$CLIENTS" ]; then bad="failed:held_${held:-0}_of_$CLIENTS"; fi
    cell "idle_${mode}_b_per_conn" "$s" "${bad:-$(pick server_rss_per_conn_b "$line")}"
  done
done

# 2. Fan-out latency, and the floor of each run.
for s in "${servers[@]}"; do
  dist=()
  [ -n "$DIST" ] && dist=(--dist "$DIST")
  [ -n "$RESULTS" ] && dist+=(--results "$RESULTS")
  line=$(timeout "$(secs_for $(( ROUNDS * 30 )))" scripts/fanout.sh --server "$s" --clients "$CLIENTS" --rounds "$ROUNDS" \
    "${dist[@]}" 2>"$LOAD_DIR/fanout.$s.err" | tail -n 1) || true
  grep -E 'round [0-9]+:|FAILED' "$LOAD_DIR/fanout.$s.err" | sed "s/^/compare: $s: /" >&2 || true
  bad=$(verdict "$line" fanout_p100_ms "$LOAD_DIR/fanout.$s.err")
  missed=$(pick fanout_missed "$line")
  if [ -z "$bad" ] && [ "${missed:-0}" != 0 ]; then bad="failed:missed_$missed"; fi
  for k in fanout_p50_ms fanout_p99_ms fanout_p100_ms floor_p100_ms; do
    v=$(pick "$k" "$line")
    if [ "$k" = floor_p100_ms ] && [ -n "$v" ] && [ "$v" != na ]; then cell "$k" "$s" "$v"; else cell "$k" "$s" "${bad:-$v}"; fi
  done
done

# 3. Throughput: HTTP keep-alive (wrk) and WebSocket echo (zring-ws-load), one server
# instance for both.
for s in "${servers[@]}"; do
  port=$(free_port)
  # --stream-maxconn 10,000 (zring's and Condure's default, as scripts/bench-*.sh run them),
  # so the ZeroMQ HWMs (5 % of it) are the ones every other benchmark ran with.
  if ! start_server "$s" "$port" 9000 2>"$LOAD_DIR/tp.$s.err"; then
    why=$(server_state "$s")
    [ "$why" = alive ] && why="failed:no_answer"
    cell http_req_per_s "$s" "$why"; cell ws_msgs_per_s "$s" "$why"
    stop_server
    continue
  fi
  rps=$(timeout $(( SECS + 30 )) wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$port/hello" 2>&1 | awk '/Requests\/sec/ {print $2}') || true
  st=$(server_state "$s")
  if [ "$st" != alive ]; then rps=$st; fi
  cell http_req_per_s "$s" "${rps:-failed:wrk}"
  mps=
  if [ "$st" = alive ]; then
    wline=$(timeout $(( SECS + 30 )) "$BIN/zring-ws-load" --port "$port" --path /ws --conns 64 --secs "$SECS" --size 16 \
      --threads 2 2>"$LOAD_DIR/ws.$s.err") || true
    mps=$(sed -n 's/.*msgs_per_sec=\([0-9.]*\).*/\1/p' <<<"$wline")
    st=$(server_state "$s")
    [ "$st" = alive ] || mps=$st
    [ -n "$mps" ] || mps="failed:$(head -n 1 "$LOAD_DIR/ws.$s.err" | tr -s ' \t' '__' | cut -c1-60)"
  fi
  cell ws_msgs_per_s "$s" "${mps:-$st}"
  stop_server
done

# 4. The table: one row per figure, one column per server, then the ratios.
get() { awk -v w="$1" -v s="$2" '$1 == w && $2 == s { v = $3 } END { print v }' "$CELLS"; }
num() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { if num "$1" && num "$2" && [ "$(awk -v b="$2" 'BEGIN { print (b > 0) }')" = 1 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo "-"; fi; }
has() { [[ ",$SERVERS," == *",$1,"* ]]; }
pairs=()
has zring && has condure && pairs+=(zring/condure)
has zring && has mongrel2 && pairs+=(zring/mongrel2)
has zring-m2 && has mongrel2 && pairs+=(zring-m2/mongrel2)
rows=(idle_http_b_per_conn idle_ws_b_per_conn fanout_p50_ms fanout_p99_ms fanout_p100_ms floor_p100_ms http_req_per_s ws_msgs_per_s)
label() {
  case "$1" in
    idle_http_b_per_conn) echo "idle HTTP keep-alive, B/conn" ;;
    idle_ws_b_per_conn) echo "idle WebSocket, B/conn" ;;
    fanout_p50_ms) echo "fan-out p50, ms" ;;
    fanout_p99_ms) echo "fan-out p99, ms" ;;
    fanout_p100_ms) echo "fan-out p100, ms" ;;
    floor_p100_ms) echo "  floor p100 (same run), ms" ;;
    http_req_per_s) echo "HTTP wrk -t2 -c64, req/s" ;;
    ws_msgs_per_s) echo "WS echo 64 conns, msgs/s" ;;
  esac
}
echo
echo "compare: $CLIENTS clients, throughput ${SECS}s, $ROUNDS fan-out rounds, idle held ${HOLD}s (sampled at ${SETTLE}s), profile $PROFILE"
hdr=$(printf '%-30s' "workload")
for s in "${servers[@]}"; do hdr+=$(printf ' %14s' "$s"); done
for p in "${pairs[@]}"; do hdr+=$(printf ' %17s' "$p"); done
echo "$hdr"
kv="test=compare clients=$CLIENTS secs=$SECS rounds=$ROUNDS"
for w in "${rows[@]}"; do
  row=$(printf '%-30s' "$(label "$w")")
  for s in "${servers[@]}"; do
    v=$(get "$w" "$s")
    v=${v:-n/a}
    row+=" $(printf '%14s' "$v")"
    [ ${#v} -gt 14 ] && row+=" " # a long crash reason keeps its own column apart
    kv+=" ${w}_${s//-/_}=$v"
  done
  for p in "${pairs[@]}"; do
    r=$(ratio "$(get "$w" "${p%/*}")" "$(get "$w" "${p#*/}")")
    row+=$(printf ' %17s' "$r")
    a=${p%/*} b=${p#*/}
    kv+=" ${w}_ratio_${a//-/_}_${b//-/_}=$r"
  done
  echo "$row"
done
echo "(ratios: memory and latency lower is better for zring, throughput higher is better)"
echo "$kv"
[ -z "$RESULTS" ] || echo "$kv" >>"$RESULTS"
