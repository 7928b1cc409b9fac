#!/usr/bin/env bash
# Runs a command under heaptrack's allocation recorder in this process's place (exec), so
# the caller's `$!` is the command itself: signals reach it and it exits as it would
# without heaptrack. `heaptrack CMD` instead waits in a shell of its own, which a load
# script's cleanup cannot stop cleanly.
#
#   scripts/heaptrack-exec.sh OUT.zst CMD [ARGS...]
#
# The recording goes to OUT.zst (read it with `heaptrack_print -f OUT.zst`); the
# interpreter's pid is written to OUT.zst.pid, and the file is complete once that process
# has exited (after CMD exits).
set -euo pipefail
out=$1
shift
lib=$(readlink -f "$(dirname "$(readlink -f "$(command -v heaptrack)")")/../lib/heaptrack")
[ -x "$lib/libexec/heaptrack_interpret" ] || { echo "heaptrack's interpreter not found in $lib" >&2; exit 1; }
pipe=$(mktemp -u /tmp/heaptrack-exec.XXXXXX)
mkfifo "$pipe"
("$lib/libexec/heaptrack_interpret" <"$pipe" | zstd -q -c >"$out"; rm -f "$pipe") &
echo $! >"$out.pid"
exec env LD_PRELOAD="$lib/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$pipe" "$@"
