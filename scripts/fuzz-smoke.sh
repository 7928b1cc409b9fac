#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly from its seed corpus: a crash fails the run.
# FUZZ_SECONDS (default 20) per target. Installs cargo-fuzz if it is missing (scripts/setup.sh).
# Every target `cargo fuzz list` names runs, seeded from fuzz/corpus/<target>/ (conn_script's
# seeds are written by scripts/conn-script-seeds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
scripts/setup.sh fuzz
export RUSTC_BOOTSTRAP=1
targets=$(cd fuzz && cargo fuzz list)
for t in $targets; do
  corpus="fuzz/corpus/$t"
  work=$(mktemp -d /tmp/zring-fuzz-$t.XXXXXX)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  echo "== fuzz $t (${secs}s)"
  (cd fuzz && cargo fuzz run "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -3)
  rm -rf "$work"
done
