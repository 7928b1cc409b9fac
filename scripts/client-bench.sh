#!/usr/bin/env bash
# Client-mode figures, side by side in one run: zring, zurl 1.11 (Debian) and
# pushpin-connmgr's client mode (Pushpin 2.0's, from scripts/pushpin-latest.sh's cache, or
# PUSHPIN_CONNMGR=path; skipped with a message when there is none). Each connection manager
# in turn, the same requester and origin (src/bin/zring-zhttp-bench.rs):
#   1. requests/s: the requester keeps INFLIGHT (64) ZHTTP GETs in flight for SECS (10) s
#      after a WARMUP (2) s, over the stream sockets (PUSH/SUB) and over the req socket
#      (DEALER → ROUTER); the manager → origin connections are keep-alive and reused. CPU
#      of the manager, the requester and the origin over the window, so it shows who was the
#      bottleneck (the box has 2 cores; all three share them).
#   2. latency added by the hop: RATE (1000) requests/s on a fixed schedule (open loop, a
#      send never waits for an answer) through the manager, p50/p99, minus the same
#      schedule sent straight to the origin over keep-alive connections.
#   3. memory per idle proxied WebSocket (client side): WS_COUNT (1000) sessions opened
#      through the manager to a WebSocket echo origin, RSS of the manager before and after,
#      divided by the count (bytes_per_ws); and the growth over the second half of them
#      divided by its count (marginal_bytes_per_ws: one more session, without what the first
#      sessions grow once: tables, pools, the bridge's maps). Only for managers with outbound WebSocket: zring's --help lists
#      it in its client-mode section, or this step says that it cannot run yet.
# Prints key=value lines (cm=<name> ...), then the ratios. RESULTS=FILE appends the lines.
# WORKERS (2) for zring and pushpin-connmgr; RUNTIME (uring) for zring; CMS="zring zurl
# connmgr" picks which run.
set -euo pipefail
cd "$(dirname "$0")/.."
INFLIGHT=${INFLIGHT:-64} SECS=${SECS:-10} WARMUP=${WARMUP:-2} RATE=${RATE:-1000}
WS_COUNT=${WS_COUNT:-1000} WORKERS=${WORKERS:-2} RUNTIME=${RUNTIME:-uring}
CMS=${CMS:-zring zurl connmgr}
scripts/setup.sh client-bench
cargo build --release -q --bin zring --bin zring-zhttp-bench
BIN=target/release
# shellcheck source=scripts/load-lib.sh
. scripts/load-lib.sh # LOAD_DIR, LOAD_PIDS (killed by pid on exit), free_port, rss_kb, pick
d=$LOAD_DIR
results=${RESULTS:-/dev/null}
emit() { echo "$*"; echo "$*" >>"$results"; }

connmgr=${PUSHPIN_CONNMGR:-}
if [ -z "$connmgr" ]; then
  # The newest build in scripts/pushpin-latest.sh's cache.
  connmgr=$(ls -t target/pushpin-latest/*/src/target/release/pushpin-connmgr 2>/dev/null | head -1 || true)
fi

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

origin_port=$(free_port)
"$BIN/zring-zhttp-bench" origin --port "$origin_port" --body-bytes 100 >"$d/origin.log" 2>&1 &
origin_pid=$!
LOAD_PIDS+=("$origin_pid")
for _ in $(seq 50); do grep -q origin_port= "$d/origin.log" && break; sleep 0.1; done
uri="http://127.0.0.1:$origin_port/bench"

# measure NAME PID ARGS...: runs the requester (or `direct`) with ARGS; prints its line with
# the CPU of PID (the manager, if any) and of the origin over the whole run.
measure() {
  local name=$1 pid=$2 t0 o0 w0 line t1 o1 w1
  shift 2
  t0=$(ticks "$pid") o0=$(ticks "$origin_pid") w0=$(date +%s.%N)
  line=$("$BIN/zring-zhttp-bench" "$@")
  t1=$(ticks "$pid") o1=$(ticks "$origin_pid") w1=$(date +%s.%N)
  awk -v n="$name" -v l="$line" -v t="$((t1 - t0))" -v o="$((o1 - o0))" -v w0="$w0" -v w1="$w1" -v hz="$hz" \
    'BEGIN { w = w1 - w0; printf "%s %s cm_cpu_pct=%.0f origin_cpu_pct=%.0f\n", n, l, t / hz / w * 100, o / hz / w * 100 }'
}

run_args=(--secs "$SECS" --warmup "$WARMUP")
emit "$(measure "cm=direct mode=closed inflight=$INFLIGHT" 0 direct --port "$origin_port" --inflight "$INFLIGHT" "${run_args[@]}" \
  | sed 's/ cm_cpu_pct=0//; s/requester_cpu_pct/client_cpu_pct/')"
direct_lat=$("$BIN/zring-zhttp-bench" direct --port "$origin_port" --rate "$RATE" --inflight 64 "${run_args[@]}" | sed 's/requester_cpu_pct/client_cpu_pct/')
emit "cm=direct mode=latency $direct_lat"

# start_cm NAME: starts one manager with stream endpoints ipc://$d/NAME-{in,in-stream,out}
# and the req endpoint ipc://$d/NAME-req; sets CM_PID.
start_cm() {
  local name=$1 base="ipc://$d/$1"
  case "$name" in
    zring)
      "$BIN/zring" --runtime "$RUNTIME" --workers "$WORKERS" --zserver-stream "$base" \
        --zserver-req "$base-req" --log-level 1 >"$d/$name.log" 2>&1 &
      ;;
    connmgr)
      "$connmgr" --workers "$WORKERS" --zserver-stream "$base" --zserver-req "$base-req" \
        --log-level 1 >"$d/$name.log" 2>&1 &
      ;;
    zurl)
      # zurl's own config: no deny list (the origin is on loopback), the defaults otherwise.
      printf '[General]\ninstance_id=zurl-bench\nin_spec=%s-in\nin_stream_spec=%s-in-stream\nout_spec=%s-out\nin_req_spec=%s-req\ndefpolicy=allow\n' \
        "$base" "$base" "$base" "$base" >"$d/zurl.conf"
      zurl --config="$d/zurl.conf" >"$d/$name.log" 2>&1 &
      ;;
  esac
  CM_PID=$!
  LOAD_PIDS+=("$CM_PID")
  for _ in $(seq 100); do [ -S "$d/$name-out" ] && [ -S "$d/$name-req" ] && return 0; sleep 0.1; done
  echo "$name did not bind its endpoints: $(tail -3 "$d/$name.log")" >&2
  return 1
}

stop_cm() {
  kill "$CM_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$CM_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$CM_PID" 2>/dev/null || true
  wait "$CM_PID" 2>/dev/null || true
}

has_outbound_ws() { # NAME
  case "$1" in
    zring) "$BIN/zring" --help | sed -n '/^OPTIONS (client mode/,/^$/p' | grep -qi websocket ;;
    *) return 0 ;; # zurl and pushpin-connmgr both proxy WebSockets
  esac
}

ws_port=$(free_port)
ws_origin=
declare -A rps_stream rps_req p50 p99 ws_bytes
for cm in $CMS; do
  if [ "$cm" = connmgr ] && [ -z "$connmgr" ]; then
    emit "cm=connmgr skipped=no_build (run scripts/pushpin-latest.sh PUSHPIN_SRC first, or set PUSHPIN_CONNMGR)"
    continue
  fi
  start_cm "$cm"
  s="$d/$cm-in,$d/$cm-in-stream,$d/$cm-out"
  s="ipc://${s//,/,ipc://}"
  line=$(measure "cm=$cm mode=stream inflight=$INFLIGHT" "$CM_PID" requester --stream "$s" --uri "$uri" \
    --inflight "$INFLIGHT" "${run_args[@]}")
  emit "$line"
  rps_stream[$cm]=$(pick rps "$line")
  line=$(measure "cm=$cm mode=req inflight=$INFLIGHT" "$CM_PID" requester --req "ipc://$d/$cm-req" --uri "$uri" \
    --inflight "$INFLIGHT" "${run_args[@]}")
  emit "$line"
  rps_req[$cm]=$(pick rps "$line")
  line=$(measure "cm=$cm mode=latency" "$CM_PID" requester --stream "$s" --uri "$uri" --rate "$RATE" "${run_args[@]}")
  emit "$line"
  p50[$cm]=$(pick p50_us "$line") p99[$cm]=$(pick p99_us "$line")
  stop_cm

  if ! has_outbound_ws "$cm"; then
    emit "cm=$cm mode=ws_idle skipped=no_outbound_websocket (zring --help lists none in client mode yet)"
    continue
  fi
  if [ -z "$ws_origin" ]; then
    /usr/bin/python3 scripts/pushpin_latest_peers.py origin "$(free_port)" "$ws_port" >"$d/ws-origin.log" 2>&1 &
    ws_origin=$!
    LOAD_PIDS+=("$ws_origin")
    sleep 1
  fi
  # A fresh manager, so pools and buffers of the HTTP runs are not in the figure.
  start_cm "$cm"
  sleep 1
  rss0=$(rss_kb "$CM_PID")
  half=$((WS_COUNT / 2))
  "$BIN/zring-zhttp-bench" ws-idle --stream "$s" --uri "ws://127.0.0.1:$ws_port/idle" --count "$WS_COUNT" \
    --mid "$half" --hold-secs 30 >"$d/ws-$cm.out" 2>&1 &
  req=$!
  LOAD_PIDS+=("$req")
  for _ in $(seq 1300); do grep -qs ws_mid= "$d/ws-$cm.out" && break; sleep 0.1; done
  sleep 2 # the first half's buffers settle (the requester pauses 4 s)
  rss_mid=$(rss_kb "$CM_PID")
  for _ in $(seq 1300); do grep -qs ws_open= "$d/ws-$cm.out" && break; sleep 0.1; done
  sleep 2 # the last sessions' buffers settle
  rss1=$(rss_kb "$CM_PID")
  opened=$(pick ws_open "$(cat "$d/ws-$cm.out")")
  mid=$(pick ws_mid "$(cat "$d/ws-$cm.out")")
  kill "$req" 2>/dev/null || true
  wait "$req" 2>/dev/null || true
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="${opened:-0}" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "na" }')
  # The second half's growth over its count: what one more session costs.
  marginal=$(awk -v a="$rss_mid" -v b="$rss1" -v n="${opened:-0}" -v m="${mid:-0}" \
    'BEGIN { if (n > m) printf "%.0f", (b - a) * 1024 / (n - m); else print "na" }')
  ws_bytes[$cm]=$per
  emit "cm=$cm mode=ws_idle $(grep ws_open= "$d/ws-$cm.out") rss_before_kb=$rss0 rss_mid_kb=$rss_mid rss_after_kb=$rss1 bytes_per_ws=$per marginal_bytes_per_ws=$marginal"
  stop_cm
done

ratio() { # A B: A/B with two decimals, or na
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "na" }'
}
added() { # A B: A-B, or na
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b != "") print a - b; else print "na" }'
}
dp50=$(pick p50_us "$direct_lat") dp99=$(pick p99_us "$direct_lat")
line="summary"
for cm in $CMS; do
  [ -n "${rps_stream[$cm]:-}" ] || continue
  line+=" ${cm}_added_p50_us=$(added "${p50[$cm]}" "$dp50") ${cm}_added_p99_us=$(added "${p99[$cm]}" "$dp99")"
done
for other in zurl connmgr; do
  line+=" ratio_stream_zring_$other=$(ratio "${rps_stream[zring]:-}" "${rps_stream[$other]:-}")"
  line+=" ratio_req_zring_$other=$(ratio "${rps_req[zring]:-}" "${rps_req[$other]:-}")"
done
line+=" ratio_ws_bytes_zring_connmgr=$(ratio "${ws_bytes[zring]:-}" "${ws_bytes[connmgr]:-}")"
emit "$line"
