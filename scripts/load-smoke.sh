#!/usr/bin/env bash
# CI: the small versions of the load scripts (5,000 idle WebSockets, a 2,000-client fan-out
# with its floor), checking that each runs and prints one parseable key=value line with the
# figures it promises. Proves the tools work; the figures themselves are not judged here.
# Uses the debug binaries `cargo test` already built (PROFILE=debug); ~40 s.
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
