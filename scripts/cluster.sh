#!/usr/bin/env bash
# Many zring instances sharing one handler (docs/scale-out.md): K instances, each its own
# process and `--id`, connect (`--zclient-connect`) over ZeroMQ tcp to one example handler
# that binds (`--bind`); zring-load spreads K×N WebSocket clients over the instances in turn
# (as DNS round-robin or an L4 balancer would) on /ws/broadcast and measures handler
# broadcasts (POST /broadcast through instance 1) as fanout.sh does.
#
#   scripts/cluster.sh --instances K --clients N [--netns] [--rounds R] [--kill-after ROUND]
#                      [--expiry-wait SECS] [--no-single] [--results FILE]
#
# In one run:
#  1. one instance with K×N clients (WORKERS, default 2, workers): the single-instance
#     broadcast p100 beside the cluster's (--no-single skips it);
#  2. K instances (CLUSTER_WORKERS, default 1, worker each) with N clients each: R rounds
#     (default 5); after round --kill-after (default R-2) instance K is killed (SIGKILL, as a
#     crash) and the remaining rounds must reach every client of the others and none of K's
#     are expected; then, unless --expiry-wait 0, the handler's view (its --stats line) is
#     watched, with every client still connected (zring-load --hold), until it forgets
#     instance K's sessions at expiry (zring keeps its sessions alive every 45 s, the
#     handler expires them after 60 s silent) while the others' stay (handler_end).
#
# --netns: each instance runs in a network namespace of its own (zrc<pid>-<i>), joined by a
# veth pair to a bridge in the root namespace (zrcbr<pid>); addresses are in a 10.x.0.0/16
# this script picks unused (bridge .0.1, load sources .0.10-.0.17, instance i .i.2); the
# handler and zring-load stay in the root namespace. Everything is removed on exit, and
# sysctls restored (scripts/load-lib.sh); in a namespace its own backlog sysctls are set.
# Without --netns all instances listen on loopback ports.
#
# Prints one key=value line (test=cluster): single_p100_ms, cluster_p100_ms (rounds before
# the kill), instance_p100_ms (per instance, every round it was alive), instance_members,
# instance_closed (only the killed one's clients may be lost), missed, and the expiry check.
# Env: WORKERS, CLUSTER_WORKERS, RUNTIME, PROFILE=debug, KEEP_LOGS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
K=2 N=1000 NETNS=0 ROUNDS=5 KILL_AFTER= EXPIRY_WAIT=90 SINGLE=1 RESULTS= PAYLOAD=64
usage() {
  echo "usage: $0 --instances K --clients N [--netns] [--rounds R] [--kill-after ROUND] [--expiry-wait SECS] [--no-single] [--results FILE]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --instances) K=$2; shift 2 ;;
    --clients) N=$2; shift 2 ;;
    --netns) NETNS=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --kill-after) KILL_AFTER=$2; shift 2 ;;
    --expiry-wait) EXPIRY_WAIT=$2; shift 2 ;;
    --no-single) SINGLE=0; shift ;;
    --results) RESULTS=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ "$K" -ge 2 ] && [ "$K" -le 16 ] || { echo "--instances is 2 to 16" >&2; exit 2; }
[ "$ROUNDS" -ge 2 ] || { echo "--rounds is at least 2 (one before the kill, one after)" >&2; exit 2; }
KILL_AFTER=${KILL_AFTER:-$(( ROUNDS > 3 ? ROUNDS - 2 : 1 ))}
[ "$KILL_AFTER" -ge 1 ] && [ "$KILL_AFTER" -lt "$ROUNDS" ] || { echo "--kill-after is 1 to rounds-1" >&2; exit 2; }
TOTAL=$(( K * N ))

# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
NS=() BRIDGE=
netns_cleanup() {
  local ns p
  for ns in "${NS[@]}"; do
    # Anything of ours still running in it (all started by this script) would keep it alive.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || echo "could not remove netns $ns" >&2
  done
  [ -z "$BRIDGE" ] || ip link del "$BRIDGE" 2>/dev/null || true
}
# Processes first (some run inside the namespaces), then the namespaces, then sysctls.
trap 'load_cleanup; netns_cleanup' EXIT
load_sysctls
load_build

if [ "$NETNS" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "--netns needs root" >&2; exit 1; }
  # A 10.x.0.0/16 no interface uses.
  NET=
  for x in $(shuf -i 100-250 -n 40); do
    ip -4 addr | grep -q "inet 10\.$x\." || ip -4 route | grep -q "^10\.$x\." || { NET=10.$x; break; }
  done
  [ -n "$NET" ] || { echo "no free 10.x.0.0/16" >&2; exit 1; }
  BRIDGE=zrcbr$$
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.0.1/16" dev "$BRIDGE"
  for s in $(seq 10 17); do ip addr add "$NET.0.$s/16" dev "$BRIDGE"; done
  ip link set "$BRIDGE" up
  # Bridged frames must not go through iptables if br_netfilter is loaded.
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && set_sysctl net.bridge.bridge-nf-call-iptables 0
  for i in $(seq "$K"); do
    ns=zrc$$-$i
    ip netns add "$ns"
    NS+=("$ns")
    ip link add "zrc$$v$i" type veth peer name eth0 netns "$ns"
    ip link set "zrc$$v$i" master "$BRIDGE" up
    ip -n "$ns" addr add "$NET.$i.2/16" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # Per-namespace sysctls (gone with the namespace): listen backlogs for the connect burst.
    ip netns exec "$ns" sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 >/dev/null
  done
  HANDLER_HOST=$NET.0.1
  SRC_IPS=$NET.0.10-$NET.0.17
  addr_of() { echo "$NET.$1.2"; }
  # The command prefix that runs something in instance I's namespace (ip execs it: $! is it).
  ns_exec() { NS_EXEC=(ip netns exec "zrc$$-$1"); }
else
  HANDLER_HOST=127.0.0.1
  SRC_IPS=127.0.0.2-127.0.0.200
  addr_of() { echo 127.0.0.1; }
  ns_exec() { NS_EXEC=(); }
fi

INST_PIDS=() INST_TARGETS=()
# start_handler: the example handler, binding its three sockets for instances to connect.
start_handler() {
  ZPORT=$(free_port)
  while [ "$ZPORT" -gt 31990 ]; do ZPORT=$(free_port); done
  "$BIN/zring-example-handler" --bind --stream "tcp://$HANDLER_HOST:$ZPORT" --stats 1 >"$LOAD_DIR/handler-$1.log" 2>&1 &
  HANDLER_PID=$!
  LOAD_PIDS+=("$HANDLER_PID")
}
# start_instance I PORT MAXCONN WORKERS: zring --id zring-I in namespace I (or on loopback).
start_instance() {
  local i=$1 port=$2 maxconn=$3 workers=$4 addr
  addr=$(addr_of "$i")
  ns_exec "$i"
  "${NS_EXEC[@]}" "$BIN/zring" --id "zring-$i" --runtime "${RUNTIME:-uring}" --workers "$workers" --stream-maxconn "$maxconn" \
    --listen "$addr:$port" --zclient-stream "tcp://$HANDLER_HOST:$ZPORT" --zclient-connect >"$LOAD_DIR/zring-$i.log" 2>&1 &
  INST_PIDS+=($!)
  LOAD_PIDS+=($!)
  INST_TARGETS+=("$addr:$port")
  for _ in $(seq 100); do curl -sf -m 1 "http://$addr:$port/hello" >/dev/null && return 0; sleep 0.1; done
  echo "instance $i: no answer on $addr:$port" >&2
  return 1
}
stop_all() { # ends this phase's instances and handler, by pid
  local p keep=() q
  for p in "${INST_PIDS[@]}" "$HANDLER_PID"; do kill "$p" 2>/dev/null || true; done
  for p in "${INST_PIDS[@]}" "$HANDLER_PID"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for q in "${LOAD_PIDS[@]}"; do [[ " ${INST_PIDS[*]} $HANDLER_PID " == *" $q "* ]] || keep+=("$q"); done
  LOAD_PIDS=("${keep[@]}")
  INST_PIDS=() INST_TARGETS=()
}
# load ROUNDS [extra args]: zring-load over INST_TARGETS; prints its key=value line.
load() {
  local rounds=$1 targets; shift
  targets=$(IFS=,; echo "${INST_TARGETS[*]}")
  "$BIN/zring-load" --mode ws --clients "${CLIENTS_NOW}" --target "$targets" --src-ips "$SRC_IPS" \
    --path /ws/broadcast --fanout-trigger "http://${INST_TARGETS[0]}/broadcast" --rounds "$rounds" \
    --payload "$PAYLOAD" --max-secs $(( CLIENTS_NOW / 150 + rounds * 25 + EXPIRY_WAIT + 180 )) --connect-timeout 60 \
    --inflight 128 --label cluster "$@" 2>>"$LOAD_DIR/load.err"
}
handler_view() { grep '^handler_stats' "$LOAD_DIR/handler-$1.log" | tail -n 1; }
port=$(free_port)

# 1. One instance with K×N clients.
single_line=
if [ "$SINGLE" = 1 ]; then
  start_handler single
  start_instance 1 "$port" $(( TOTAL + 1000 )) "${WORKERS:-2}"
  CLIENTS_NOW=$TOTAL
  single_line=$(load "$(( KILL_AFTER ))" || true)
  grep -E 'round|FAILED' "$LOAD_DIR/load.err" >&2 || true
  : >"$LOAD_DIR/load.err"
  stop_all
fi

# 2. K instances with N clients each; instance K is killed after round KILL_AFTER.
start_handler cluster
for i in $(seq "$K"); do
  # One address per namespace; on loopback, one port per instance.
  [ "$NETNS" = 1 ] || [ "$i" = 1 ] || port=$(free_port)
  start_instance "$i" "$port" $(( N + 1000 )) "${CLUSTER_WORKERS:-1}"
done
killed_pid=${INST_PIDS[$(( K - 1 ))]}
CLIENTS_NOW=$TOTAL
# The clients stay connected --expiry-wait seconds after the last round (zring-load --hold),
# so the handler's view shows the survivors' sessions kept while the dead instance's expire.
set +e
load "$ROUNDS" --after-round "$KILL_AFTER:kill -9 $killed_pid" --hold "$EXPIRY_WAIT" >"$LOAD_DIR/line" &
load_pid=$!
LOAD_PIDS+=("$load_pid")
# 3. The handler forgets the dead instance's sessions at expiry, keeps the others'.
while kill -0 "$load_pid" 2>/dev/null && ! grep -q "fan-out round $KILL_AFTER:" "$LOAD_DIR/load.err"; do sleep 0.2; done
t0=$(date +%s) forgot_s=na view_after_kill= view_end=
while kill -0 "$load_pid" 2>/dev/null; do
  sleep 1
  view=$(handler_view cluster)
  [ -n "$view_after_kill" ] || view_after_kill=$view
  if [ "$EXPIRY_WAIT" -gt 0 ] && [ "$forgot_s" = na ] && [[ "$(pick instances "$view")," != *"zring-$K:"* ]]; then
    forgot_s=$(( $(date +%s) - t0 )) view_end=$view
  fi
done
wait "$load_pid"
rc=$?
set -e
keep=()
for q in "${LOAD_PIDS[@]}"; do [ "$q" = "$load_pid" ] || keep+=("$q"); done
LOAD_PIDS=("${keep[@]}")
line=$(cat "$LOAD_DIR/line")
view_after_kill=${view_after_kill:-$(handler_view cluster)}
view_end=${view_end:-$view_after_kill}
grep -E 'round|FAILED' "$LOAD_DIR/load.err" >&2 || true

pick_list() { pick "$1" "$line"; }
members=$(pick_list target_members) closed=$(pick_list target_closed)
# Lost only the killed instance's clients: every other instance's closed count is 0, and the
# killed one lost all its members.
lost_ok=no
if [ -n "$members" ] && [ -n "$closed" ]; then
  IFS=, read -r -a m <<<"$members"
  IFS=, read -r -a c <<<"$closed"
  lost_ok=yes
  for i in $(seq 0 $(( K - 2 ))); do [ "${c[$i]}" = 0 ] || lost_ok=no; done
  [ "${c[$(( K - 1 ))]}" = "${m[$(( K - 1 ))]}" ] || lost_ok=no
fi
# The handler kept every survivor's sessions while it forgot the dead instance's.
kept_ok=na
if [ "$forgot_s" != na ] && [ -n "$members" ]; then
  kept_ok=yes
  for i in $(seq 1 $(( K - 1 ))); do
    [[ ",$(pick instances "$view_end")," == *",zring-$i:${m[$(( i - 1 ))]},"* ]] || kept_ok=no
  done
fi
# The cluster's p100 over the rounds before the kill (all K instances serving).
pre=$(pick fanout_p100_rounds_ms "$line" | tr '/' '\n' | head -n "$KILL_AFTER")
cluster_p100=$(sort -g <<<"$pre" | tail -n 1)
cluster_median=$(sort -g <<<"$pre" | awk '{v[NR] = $1} END { if (NR) print v[int((NR + 1) / 2)] }')
single_p100=$(pick fanout_p100_ms "$single_line")
single_median=$(pick fanout_p100_median_ms "$single_line")
survivors=$(pick instances "$view_end")
out="test=cluster instances=$K clients_per_instance=$N netns=$NETNS rounds=$ROUNDS killed_after_round=$KILL_AFTER"
out+=" connected=$(pick connected "$line") single_clients=$TOTAL single_p100_ms=${single_p100:-na}"
out+=" single_p100_median_ms=${single_median:-na} single_missed=$(pick fanout_missed "$single_line")"
out+=" cluster_p100_ms=${cluster_p100:-na} cluster_p100_median_ms=${cluster_median:-na}"
out+=" fanout_p100_rounds_ms=$(pick fanout_p100_rounds_ms "$line")"
out+=" instance_p100_ms=$(pick_list target_p100_ms) instance_p100_median_ms=$(pick_list target_p100_median_ms)"
out+=" instance_members=${members:-na} instance_expected=$(pick_list target_expected)"
out+=" instance_received=$(pick_list target_received) instance_closed=${closed:-na} lost_only_killed=$lost_ok"
out+=" missed=$(pick fanout_missed "$line") handler_after_kill=$(pick instances "$view_after_kill")"
out+=" handler_forgot_killed_s=$forgot_s handler_end=${survivors:-na} handler_kept_survivors=$kept_ok"
out+=" handler_expired=$(pick expired "$view_end")"
ok=ok
[ "$rc" = 0 ] && [ "$lost_ok" = yes ] && [ "$(pick fanout_missed "$line")" = 0 ] || ok=fail
[ "$SINGLE" = 0 ] || [ "$(pick fanout_missed "$single_line")" = 0 ] || ok=fail
[ "$EXPIRY_WAIT" = 0 ] || [ "$kept_ok" = yes ] || ok=fail
out+=" status=$ok load_exit=$rc"
echo "$out"
[ -z "$RESULTS" ] || echo "$out" >>"$RESULTS"
[ "$ok" = ok ]
