#!/usr/bin/env bash
# TLS fan-out, two zring builds side by side in one run: allocations per broadcast round,
# the rounds' fan-out p100, and the server's RSS after the rounds (issue 16, item 3).
#
#   scripts/tls-fanout-alloc.sh --before DIR --after DIR [--clients N] [--rounds K]
#
# DIR holds a `zring` binary (a copy of target/release of each commit); zring-load and the
# example handler are this tree's; no floor (`--no-floor`: the floor is zring-load's alone
# and allocates nothing in zring). A before build, for instance:
#   git worktree add --detach /tmp/zring-before main
#   t=$PWD/target; (cd /tmp/zring-before && CARGO_TARGET_DIR=$t cargo build --release --bin zring)
#   mkdir -p /tmp/before && cp target/release/zring /tmp/before/
# (that target dir is this tree's, so only zring itself is compiled again; copy the binary
# out before this tree's next build overwrites it). For each build, in turn: `scripts/fanout.sh --tls` as is
# (p100 of every round, their median, RSS after the rounds), then again with zring under
# heaptrack (scripts/heaptrack-exec.sh), where the allocations counted are the calls to
# allocation functions whose backtrace holds `handle_packet_shared` (the fan-out path,
# where each established TLS target's record is sealed; handshakes, packets and the
# clients' upgrades are not in it), split into zring's (the record's buffer) and rustls's
# (a temporary per record inside rustls's encrypter). Per round per target = count / (K × N). Runs
# alternate between the builds (before, after, before, after) so drift on a shared box
# falls on both. Prints one key=value line per build and run kind; logs in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=20000 ROUNDS=5 BEFORE= AFTER=
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --before) BEFORE=$2; shift 2 ;;
    --after) AFTER=$2; shift 2 ;;
    *) echo "usage: $0 --before DIR --after DIR [--clients N] [--rounds K]" >&2; exit 2 ;;
  esac
done
[ -x "$BEFORE/zring" ] && [ -x "$AFTER/zring" ] || { echo "--before and --after must hold a zring binary" >&2; exit 2; }
command -v heaptrack_print >/dev/null || { echo "heaptrack is required (scripts/setup.sh)" >&2; exit 1; }
dir=$(mktemp -d /tmp/tls-fanout-alloc.XXXXXX)
echo "logs in $dir; load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

pick() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n1; }

# run LABEL DIR [heaptrack]: one fanout.sh run; prints its key=value line.
run() {
  local label=$1 bin=$2 trace=${3:-} line wrap= out allocs rustls
  if [ -n "$trace" ]; then
    out="$dir/$label.zst"
    wrap="scripts/heaptrack-exec.sh $out"
  fi
  line=$(ZRING_BIN="$bin/zring" ZRING_WRAP="$wrap" scripts/fanout.sh --clients "$CLIENTS" --rounds "$ROUNDS" --tls --no-floor \
    2>>"$dir/$label.err" || true)
  echo "$line" >"$dir/$label.line"
  local res="build=$label heaptrack=${trace:-0} clients=$CLIENTS rounds=$ROUNDS"
  for k in connected fanout_missed fanout_p100_median_ms fanout_p100_rounds_ms server_rss_kb status server_state; do
    res+=" $k=$(pick "$k" "$line")"
  done
  if [ -n "$trace" ]; then
    # The recording is complete once its interpreter has exited (bounded: 120 s).
    for _ in $(seq 1200); do kill -0 "$(cat "$out.pid")" 2>/dev/null || break; sleep 0.1; done
    # Allocation counts per backtrace (inlined frames included: release builds keep line
    # tables); the fan-out path's are those whose backtrace holds handle_packet_shared.
    heaptrack_print -f "$out" -F "$dir/$label.stacks" --flamegraph-cost-type allocations >"$dir/$label.print" 2>&1 || true
    # Of those, rustls's own: its record encrypter builds each record in a Vec of its own
    # (`PrefixedPayload`), copied into zring's buffer and freed before `encrypt` returns
    # (rustls 0.23's `write_fragments`); the rest are zring's (the sealed record's buffer).
    allocs=$(awk '/handle_packet_shared/ { s += $NF } END { print s + 0 }' "$dir/$label.stacks")
    rustls=$(awk '/handle_packet_shared/ && /PrefixedPayload/ { s += $NF } END { print s + 0 }' "$dir/$label.stacks")
    per() { awk -v a="$1" -v k="$ROUNDS" -v n="$CLIENTS" 'BEGIN { printf "%.3f", a / (k * n) }'; }
    res+=" fanout_allocs=$allocs zring_allocs=$(( allocs - rustls )) rustls_allocs=$rustls"
    res+=" zring_allocs_per_round_per_target=$(per $(( allocs - rustls )))"
    res+=" rustls_allocs_per_round_per_target=$(per "$rustls")"
    res+=" process_allocs=$(sed -n 's/^calls to allocation functions: \([0-9]*\).*/\1/p' "$dir/$label.print" | head -n1)"
  fi
  echo "$res"
}

run before "$BEFORE"
run after "$AFTER"
run before "$BEFORE" heaptrack
run after "$AFTER" heaptrack
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
