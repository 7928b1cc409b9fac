#!/usr/bin/env bash
# CI: the small versions of the load scripts (5,000 idle WebSockets, a 2,000-client fan-out
# with its floor, 2,000-client deflate and wss fan-outs, a 2-instance cluster in network namespaces, two takeovers under load, a 500-client zring/Condure/Mongrel2 comparison), checking that each runs and prints one parseable key=value line with the
# figures it promises. Proves the tools work; the figures themselves are not judged here.
# Uses the debug binaries `cargo test` already built (PROFILE=debug); ~100 s.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROFILE=${PROFILE:-debug}

check() { # name line key...: every token is key=value, every key is there, status ok
  local name=$1 line=$2 tok k; shift 2
  for tok in $line; do
    [[ "$tok" =~ ^[a-z0-9_]+=[^[:space:]]+$ ]] || { echo "$name: not key=value: '$tok' in: $line" >&2; exit 1; }
  done
  for k in "$@"; do
    [[ " $line " =~ \ $k=[^[:space:]]+\  ]] || { echo "$name: no $k in: $line" >&2; exit 1; }
  done
  echo "$name: ok: $line"
}

line=$(timeout 150 scripts/c1m.sh --clients 5000 --hold 12 | tail -n 1)
check c1m "$line" held connect_secs server_rss_per_conn_b slab_per_conn_b handler_keepalive_pps \
  fresh_request_ms load_client_bytes_per_conn
[[ "$line" == *" held=5000 "* && "$line" == *" fresh_request_code=200 "* ]] || { echo "c1m: not all held or no answer" >&2; exit 1; }

line=$(timeout 150 scripts/fanout.sh --clients 2000 --rounds 2 | tail -n 1)
check fanout "$line" fanout_p50_ms fanout_p99_ms fanout_p100_ms floor_p100_ms ratio_p100
[[ "$line" == *" fanout_missed=0 "* && "$line" == *" status=ok "* ]] || { echo "fanout: messages missed or failed" >&2; exit 1; }

# The floor's sender in a thread of its own (--floor-threads), one round.
line=$(timeout 150 scripts/fanout.sh --clients 2000 --rounds 1 --floor-threads 1 | tail -n 1)
check fanout "$line" fanout_p100_ms floor_p100_ms ratio_p100
[[ "$line" == *" floor_threads=1 "* && "$line" == *" status=ok "* ]] || { echo "fanout --floor-threads 1: failed" >&2; exit 1; }

# permessage-deflate (--compression-context shared: one compression per message and worker)
# and wss: 2,000 clients each, two rounds; every client inflates or decrypts every message
# and checks its text; nothing missed. The wss run's floor carries TLS too (its pairs'
# handshakes first, one record sealed per client per round), with the suite zring negotiated.
line=$(timeout 150 scripts/fanout.sh --clients 2000 --rounds 2 --deflate | tail -n 1)
check fanout-deflate "$line" fanout_p50_ms fanout_p99_ms fanout_p100_ms floor_p100_ms ratio_p100
[[ "$line" == *" deflate=1 "* && "$line" == *" fanout_missed=0 "* && "$line" == *" status=ok "* ]] ||
  { echo "fanout --deflate: messages missed or failed" >&2; exit 1; }
line=$(timeout 150 scripts/fanout.sh --clients 2000 --rounds 2 --tls | tail -n 1)
check fanout-tls "$line" fanout_p50_ms fanout_p99_ms fanout_p100_ms connect_secs floor_p100_ms ratio_p100 \
  floor_p100_median_ms ratio_p100_median tls_suite floor_tls_suite
[[ "$line" == *" tls=1 "* && "$line" == *" fanout_missed=0 "* && "$line" == *" status=ok "* ]] ||
  { echo "fanout --tls: messages missed or failed" >&2; exit 1; }
for k in floor_p100_ms ratio_p100; do
  [[ "$(tr ' ' '\n' <<<"$line" | sed -n "s/^$k=//p")" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "fanout --tls: $k is not a figure" >&2; exit 1; }
done
suite=$(tr ' ' '\n' <<<"$line" | sed -n 's/^tls_suite=//p')
[[ "$suite" != na && " $line " == *" floor_tls_suite=$suite "* ]] ||
  { echo "fanout --tls: the floor did not negotiate the suite zring did" >&2; exit 1; }
# A 2-instance cluster in network namespaces (scripts/cluster.sh; ~30 s): one instance with
# 2,000 clients, then two with 1,000 each, one killed after the first round; every broadcast
# reached every client still connected, and only the killed instance's clients were lost.
# (The handler's expiry of the dead instance's sessions takes 60 s+: not checked here.)
if command -v ip >/dev/null && [ "$(id -u)" = 0 ]; then
  line=$(timeout 150 scripts/cluster.sh --instances 2 --clients 1000 --netns --rounds 2 --kill-after 1 --expiry-wait 0 | tail -n 1)
  check cluster "$line" single_p100_ms cluster_p100_ms instance_p100_ms instance_members instance_closed missed
  [[ "$line" == *" missed=0 "* && "$line" == *" lost_only_killed=yes "* && "$line" == *" status=ok "* ]] ||
    { echo "cluster: missed, lost the wrong clients, or failed" >&2; exit 1; }
else
  echo "cluster: skipped (needs root and iproute2)"
fi

# Two takeovers under wrk (scripts/restart.sh; ~6 s): every handover done, no request lost.
if command -v wrk >/dev/null; then
  out=$(timeout 120 env RESTARTS=2 INTERVAL=2 scripts/restart.sh | grep '^test=restart')
  while read -r line; do
    case "$line" in
      *" handover="*) check restart "$line" new_serving_ms old_exit_ms
        [[ "$line" == *" old=exited" ]] || { echo "restart: the old zring did not exit" >&2; exit 1; } ;;
      *) check restart "$line" requests socket_errors non_2xx
        [[ "$line" == *" socket_errors=0 non_2xx=0 "* ]] || { echo "restart: requests lost" >&2; exit 1; } ;;
    esac
  done <<<"$out"
  [ "$(grep -c ' handover=' <<<"$out")" = 2 ] || { echo "restart: missing handovers: $out" >&2; exit 1; }
else
  echo "restart: skipped (needs wrk)"
fi

# The comparison at 500 clients, 1 s per throughput run, one fan-out round, zring beside
# Condure and Mongrel2 (not zring-m2, for time): every cell is a number or a reported
# failure (crashed:/failed:), and the table's key=value line parses. ~55 s.
if command -v mongrel2 >/dev/null && command -v condure >/dev/null && command -v wrk >/dev/null; then
  line=$(timeout 150 scripts/compare.sh --clients 500 --secs 1 --rounds 1 --hold 1 --settle 0 \
    --servers zring,condure,mongrel2 | tail -n 1)
  keys=()
  for w in idle_http_b_per_conn idle_ws_b_per_conn fanout_p50_ms fanout_p99_ms fanout_p100_ms floor_p100_ms \
    http_req_per_s ws_msgs_per_s; do
    keys+=("${w}_zring" "${w}_condure" "${w}_mongrel2" "${w}_ratio_zring_condure" "${w}_ratio_zring_mongrel2")
  done
  check compare "$line" "${keys[@]}"
  for tok in $line; do
    case "$tok" in
      test=* | clients=* | secs=* | rounds=* | *_ratio_*=*) ;;
      *=crashed:* | *=failed:*) echo "compare: reported as a result: $tok" ;;
      *)
        [[ "${tok#*=}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "compare: not a figure or a failure: $tok" >&2; exit 1; } ;;
    esac
  done
  # zring itself must not fail any workload at this size.
  for tok in $line; do
    case "$tok" in *_zring=crashed:* | *_zring=failed:*) echo "compare: zring failed: $tok" >&2; exit 1 ;; esac
  done
else
  echo "compare: skipped (needs mongrel2, condure and wrk)"
fi
