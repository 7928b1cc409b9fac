#!/usr/bin/env bash
# Hostile clients (issue 17): zring and Condure 1.9.1 side by side, each in front of the
# example handler, one scenario at a time, a fresh server per (server, scenario):
#
#   silent        SILENT (10,000) TCP connections that connect and send nothing: how many the
#                 server closes within DURATION, and when (first/p50/last close, seconds after
#                 each one's connect; closed_how: eof/rst and the status sent first, e.g.
#                 eof_408), from zring-hold silent.
#   slow_headers  slowhttptest -H (Slowloris), SLOW (4,000) connections at SLOW_RATE/s for
#   slow_body     DURATION s; -B (R-U-Dead-Yet, POST /echo, Content-Length 8192, a few
#   slow_read     bytes every 10 s); -X (slow read, 8 pipelined GET /echo, a 1-64 byte
#                 window, 32 bytes a second). From its CSV (one row a second): closed (the
#                 most connections closed at once while the test ran), the seconds since the
#                 test's start at which the first, half and last of them were closed, the
#                 most pending/connected, and the seconds its own probe found the service
#                 unavailable.
#   churn         zring-churn: CYCLES (1,000,000) connect / GET /hello / close cycles.
#   handler_kill  WS (10,000) WebSockets on /ws, then kill -9 of the handler: how many
#                 clients were told (close_codes: 1011, other codes, 1006_eof/1006_rst for a
#                 bare close) and when (ended_p50/p99/max_s after the kill), watched up to
#                 DURATION s (Condure only notices at its 60 s session expiry).
#
# In every scenario, zring-hold probe sends a fresh GET /hello on a new connection every
# 0.5 s while the attack runs (each bounded by PROBE_TIMEOUT, 10 s: longer than zring's 5 s
# --handler-wait, so its 503 shows as such): fresh_p50_ms/fresh_p99_ms of its 200s,
# fresh_fail and their kinds (a status, timeout, reset, ...). rss_peak_kb is the server's VmHWM (its peak RSS; each scenario
# starts a fresh server), rss_start_kb its RSS once it answered.
#
# One key=value line per (server, scenario) on stdout, after a '#' header with the commands
# and sizes; all of it also appended to docs/data/hostile-<date>.txt (RESULTS=FILE elsewhere).
#
#   scripts/hostile.sh                        # every scenario, full size (~25 min + churn)
#   scripts/hostile.sh silent handler_kill    # some of them
#   SILENT=500 SLOW=200 CYCLES=20000 WS=500 DURATION=15 scripts/hostile.sh   # quick run
#
# Env: SERVERS ("zring condure"), RUNTIME (uring|epoll, zring's runtime, default uring),
# SILENT, SLOW, SLOW_RATE (1000), CYCLES, WS, DURATION (70), CHURN_THREADS (4), PROBE_TIMEOUT, ZRING_ARGS
# (extra zring flags, e.g. --head-timeout 10000), PROFILE (release), KEEP_LOGS=1, RESULTS.
# Runs as root: sets the sysctls it needs and restores them on exit (scripts/load-lib.sh);
# installs slowhttptest and Condure if missing (scripts/setup.sh hostile).
set -euo pipefail
cd "$(dirname "$0")/.."
ALL="silent slow_headers slow_body slow_read churn handler_kill"
SCENARIOS=${*:-$ALL}
for s in $SCENARIOS; do
  [[ " $ALL " == *" $s "* ]] || { echo "unknown scenario $s (one of: $ALL)" >&2; exit 2; }
done
SERVERS=${SERVERS:-zring condure}
RUNTIME=${RUNTIME:-uring}
SILENT=${SILENT:-10000}
SLOW=${SLOW:-4000}
SLOW_RATE=${SLOW_RATE:-1000}
CYCLES=${CYCLES:-1000000}
CHURN_THREADS=${CHURN_THREADS:-4}
WS=${WS:-10000}
DURATION=${DURATION:-70}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-10}
export RUNTIME
for v in SILENT SLOW SLOW_RATE CYCLES CHURN_THREADS WS DURATION PROBE_TIMEOUT; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
for s in $SERVERS; do
  case "$s" in zring | condure) ;; *) echo "unknown server $s (zring, condure)" >&2; exit 2 ;; esac
done
if [ "$SILENT" -gt 18000 ] || [ "$WS" -gt 18000 ]; then
  echo "SILENT and WS: at most 18,000 (one client process, 20,000 fds)" >&2; exit 2
fi
case "$RUNTIME" in uring | epoll) ;; *) echo "RUNTIME is uring or epoll" >&2; exit 2 ;; esac
scripts/setup.sh hostile >&2
ulimit -n "$(ulimit -Hn)" # every process started here (Condure too) gets the hard limit
# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
load_sysctls
load_build
RESULTS=${RESULTS:-docs/data/hostile-$(date +%F).txt}
mkdir -p "$(dirname "$RESULTS")"
CLIENT_ERR=$LOAD_DIR/clients.err

out() { echo "$1"; echo "$1" >>"$RESULTS"; }

# bg OUTFILE CMD...: CMD in the background, stdout to OUTFILE, killed on exit; sets BG_PID.
bg() {
  local o=$1; shift
  "$@" >"$o" 2>>"$CLIENT_ERR" &
  BG_PID=$!
  LOAD_PIDS+=("$BG_PID")
}
# reap PID: waits for it (it ends by itself: every client is bounded) and forgets it.
reap() {
  local q keep=()
  wait "$1" 2>/dev/null || true
  for q in "${LOAD_PIDS[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
  LOAD_PIDS=("${keep[@]}")
}
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# probe_start SECS: the fresh-request probe, for at most SECS, ending with the client BG_PID.
probe_start() {
  CLIENT_PID=$BG_PID
  bg "$LOAD_DIR/probe.out" "$BIN/zring-hold" probe --target "127.0.0.1:$PORT" --every 0.5 --timeout "$PROBE_TIMEOUT" \
    --secs "$1" --while-pid "$CLIENT_PID"
  PROBE_PID=$BG_PID
}

# slow_csv CSV: closed and when, from slowhttptest's per-second CSV (Seconds, Closed, Pending,
# Connected, Service Available: the connection count while its probe was answered, else 0).
# Closed counts connections the server closed (slowhttptest never reopens one).
slow_csv() {
  awk -F, 'NR > 1 && $1 ~ /^[0-9]+$/ { n++; s[n] = $1; c[n] = $2; p[n] = $3; k[n] = $4; a[n] = $5 }
    END {
      for (i = 1; i <= n; i++) {
        if (c[i] > max) max = c[i]
        if (p[i] > maxp) maxp = p[i]
        if (k[i] + c[i] > maxk) maxk = k[i] + c[i]
        if (a[i] + 0 == 0) down++
      }
      first = "na"; half = "na"; last = "na"
      for (i = 1; i <= n; i++) {
        if (max > 0 && first == "na" && c[i] > 0) first = s[i]
        if (max > 0 && half == "na" && c[i] * 2 >= max) half = s[i]
        if (max > 0 && last == "na" && c[i] == max) last = s[i]
      }
      printf "closed=%d closed_first_s=%s closed_p50_s=%s closed_last_s=%s pending_max=%d ever_connected=%d open_at_end=%d svc_unavailable_s=%d secs=%d\n",
        max, first, half, last, maxp, maxk, k[n], down + 0, s[n]
    }' "$1"
}
# slow_errors OUT: slowhttptest's own error count (its last status block on stdout).
slow_errors() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '/^error:/ { e = $2 } END { print e == "" ? "na" : e }'
}

run_scenario() { # SERVER SCENARIO: one line
  local name=$1 scen=$2 n label line probe st hwm rss0 fds0 fds1 mode=() sht=$LOAD_DIR/sht
  label=$name
  [ "$name" = zring ] && label="zring runtime=$RUNTIME"
  case "$scen" in
    silent) n=$SILENT ;;
    slow_*) n=$SLOW ;;
    churn) n=0 ;;
    handler_kill) n=$WS ;;
  esac
  PORT=$(free_port)
  if ! start_server "$name" "$PORT" "$n" 2>>"$CLIENT_ERR"; then
    out "server=$label scenario=$scen server_state=$(server_state "$name") status=failed_to_start"
    stop_server
    return
  fi
  sleep 1
  rss0=$(rss_kb "$SERVER_PID") fds0=$(fd_count "$SERVER_PID")
  case "$scen" in
    silent)
      bg "$LOAD_DIR/client.out" "$BIN/zring-hold" silent --target "127.0.0.1:$PORT" --conns "$SILENT" \
        --watch "$DURATION" --connect-secs 60
      probe_start $(( DURATION + 70 ))
      ;;
    slow_*)
      case "$scen" in
        slow_headers) mode=(-H -u "http://127.0.0.1:$PORT/hello" -i 10 -x 24) ;;
        slow_body) mode=(-B -u "http://127.0.0.1:$PORT/echo" -s 8192 -i 10 -x 10) ;;
        slow_read) mode=(-X -u "http://127.0.0.1:$PORT/echo" -k 8 -n 1 -w 1 -y 64 -z 32) ;;
      esac
      rm -f "$sht".csv "$sht".html
      bg "$LOAD_DIR/client.out" timeout -k 5 $(( DURATION + 60 )) slowhttptest "${mode[@]}" -c "$SLOW" \
        -r "$SLOW_RATE" -l "$DURATION" -p 5 -g -o "$sht"
      probe_start $(( DURATION + 60 ))
      ;;
    churn)
      bg "$LOAD_DIR/client.out" "$BIN/zring-churn" --target "127.0.0.1:$PORT" --cycles "$CYCLES" \
        --threads "$CHURN_THREADS" --mode close --max-secs "${CHURN_MAX_SECS:-1800}"
      probe_start "${CHURN_MAX_SECS:-1800}"
      ;;
    handler_kill)
      bg "$LOAD_DIR/client.out" "$BIN/zring-hold" ws --target "127.0.0.1:$PORT" --conns "$WS" --path /ws \
        --kill-pid "$HANDLER_PID" --watch "$DURATION" --connect-secs 60
      probe_start $(( DURATION + 70 ))
      ;;
  esac
  reap "$CLIENT_PID"
  reap "$PROBE_PID"
  probe=$(tail -n 1 "$LOAD_DIR/probe.out")
  [ -n "$probe" ] || probe="fresh_p99_ms=na fresh_fail=na"
  st=$(server_state "$name")
  hwm=$(hwm_kb "$SERVER_PID") fds1=$(fd_count "$SERVER_PID")
  line=$(tail -n 1 "$LOAD_DIR/client.out" 2>/dev/null | tr -d '\r' || true)
  case "$scen" in
    slow_*)
      local csv
      csv=$(slow_csv "$sht.csv" 2>/dev/null || true)
      [ -n "$csv" ] || csv="closed=na status=no_csv"
      line="conns=$SLOW t0=test_start $csv client_errors=$(slow_errors "$LOAD_DIR/client.out")"
      [ -s "$sht.csv" ] && cp "$sht.csv" "$LOAD_DIR/$name-$scen.csv"
      ;;
    churn)
      line="${line/test=churn /}"
      line="$line client_errors=$(pick errors "$line")"
      ;;
  esac
  [ -n "$line" ] || line="status=client_failed client_errors=na"
  out "server=$label scenario=$scen $line $probe rss_start_kb=$rss0 rss_peak_kb=$hwm fds_start=$fds0 fds_end=$fds1 server_state=$st"
  stop_server
}

{
  echo "# hostile.sh $(date -u +%FT%TZ) commit=$(git rev-parse --short HEAD 2>/dev/null || echo na)$(git diff --quiet HEAD -- src scripts 2>/dev/null || echo +dirty) host=$(uname -r) cores=$(nproc)"
  echo "# servers: zring --runtime $RUNTIME --workers ${WORKERS:-2} ${ZRING_ARGS:-} | condure $(condure --version 2>/dev/null | head -n 1 | awk '{print $NF}'); example handler; --stream-maxconn conns+1000"
  echo "# sizes: SILENT=$SILENT SLOW=$SLOW SLOW_RATE=$SLOW_RATE CYCLES=$CYCLES WS=$WS DURATION=$DURATION scenarios: $SCENARIOS"
  echo "# silent: zring-hold silent --conns $SILENT --watch $DURATION (closed_*_s: seconds after each connect)"
  echo "# slow_*: slowhttptest -H|-B|-X -c $SLOW -r $SLOW_RATE -l $DURATION -p 5 -g (closed_*_s: seconds after the test's start)"
  echo "# churn: zring-churn --cycles $CYCLES --threads $CHURN_THREADS --mode close"
  echo "# handler_kill: zring-hold ws --conns $WS --kill-pid <handler> --watch $DURATION (ended_*_s: seconds after kill -9)"
  echo "# probe: zring-hold probe: GET /hello on a fresh connection every 0.5 s, ${PROBE_TIMEOUT} s timeout"
} | tee -a "$RESULTS"
for scen in $SCENARIOS; do
  for s in $SERVERS; do run_scenario "$s" "$scen"; done
done
