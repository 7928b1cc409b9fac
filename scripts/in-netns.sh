#!/usr/bin/env bash
# Runs a load script in a network namespace of its own whose TCP established hash table
# has N buckets, then removes the namespace:
#
#   scripts/in-netns.sh --ehash N COMMAND [ARGS...]
#   e.g. scripts/in-netns.sh --ehash 4194304 scripts/fanout.sh --clients 100000 --idle 900000
#
# Why: every TCP segment on loopback looks its receiving socket up in the established hash.
# The root namespace's table is sized at boot (262,144 buckets on this 24 GiB box; the
# `thash_entries=` kernel parameter), so a million loopback pairs (2,000,000 sockets) make
# chains of ~8 and each lookup several cache misses, a cost the fan-out pays and a floor
# measured with 100,000 pairs does not. A child namespace takes its size from
# `net.ipv4.tcp_child_ehash_entries` when it is created (Linux 6.1+), so a test can have
# the table a production box with a million connections would be booted with
# (docs/tuning.md). The sysctl is set only while the namespace is created and restored at
# once; the namespace's own sysctls (somaxconn, ...) are set by the load script inside it
# and vanish with it. Root only.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = --ehash ] && [ $# -ge 3 ] || { echo "usage: $0 --ehash N COMMAND [ARGS...]" >&2; exit 2; }
EHASH=$2
shift 2
ns=zring-load-$$
# The global sysctls the load scripts want are not visible inside the namespace: set them
# here for the run (scripts/load-lib.sh's values) and restore them on exit.
old_backlog=$(sysctl -n net.core.netdev_max_backlog)
old_mem=$(sysctl -n net.ipv4.tcp_mem | tr '\t' ' ')
sysctl -q -w net.core.netdev_max_backlog=65536
read -r -a mem <<<"$old_mem"
[ "${mem[2]}" -ge 4194304 ] || sysctl -q -w net.ipv4.tcp_mem="1048576 2097152 4194304"
old=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
sysctl -q -w net.ipv4.tcp_child_ehash_entries="$EHASH"
created=0
cleanup() {
  [ "$created" = 1 ] && ip netns del "$ns" 2>/dev/null || true
  sysctl -q -w net.core.netdev_max_backlog="$old_backlog" || true
  sysctl -q -w net.ipv4.tcp_mem="$old_mem" || true
}
trap cleanup EXIT
if ip netns add "$ns"; then created=1; fi
sysctl -q -w net.ipv4.tcp_child_ehash_entries="$old"
[ "$created" = 1 ] || { echo "could not create namespace $ns" >&2; exit 1; }
ip netns exec "$ns" ip link set lo up
got=$(ip netns exec "$ns" sysctl -n net.ipv4.tcp_ehash_entries)
echo "namespace $ns: tcp_ehash_entries=$got (root: $(sysctl -n net.ipv4.tcp_ehash_entries))" >&2
set +e
ip netns exec "$ns" "$@"
rc=$?
set -e
exit "$rc"
