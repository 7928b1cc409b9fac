#!/usr/bin/env bash
# The long fuzz campaign: each cargo-fuzz target for FUZZ_SECONDS (default 1800) of wall time,
# one target at a time, corpus kept between runs in fuzz/corpus/<target>/ (only seed-* files are
# committed). Prints one key=value line per target and appends it to docs/data/fuzz-campaign.txt.
# Resumable: a target that already has a line for the current commit and FUZZ_SECONDS is skipped
# (FORCE=1 reruns it). TARGETS="a b" picks targets; NICE (default 10) keeps the box usable.
# A crash leaves its input in fuzz/artifacts/<target>/ and the script goes on to the next target.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-1800}
nice_level=${NICE:-10}
scripts/setup.sh fuzz >/dev/null
export RUSTC_BOOTSTRAP=1
log=docs/data/fuzz-campaign.txt
mkdir -p docs/data
commit=$(git rev-parse --short HEAD)
targets=${TARGETS:-$(cd fuzz && cargo fuzz list)}
(cd fuzz && cargo fuzz build >/dev/null 2>&1) || { echo "fuzz build failed" >&2; exit 1; }
for t in $targets; do
  if [ -z "${FORCE:-}" ] && grep -q "^target=$t commit=$commit seconds=$secs " "$log" 2>/dev/null; then
    echo "skip $t (done at $commit)"; continue
  fi
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ "$t" = conn_script ] && ! ls "$corpus"/seed-* >/dev/null 2>&1; then
    python3 scripts/conn-script-seeds.py "$corpus"
  fi
  out=$(mktemp /tmp/zring-campaign-$t.XXXXXX)
  crashes_before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  # -print_final_stats gives execs; the last "#N ... cov: ft:" line gives coverage.
  (cd fuzz && /usr/bin/time -f 'cpu_seconds=%U' nice -n "$nice_level" \
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" \
    -rss_limit_mb=2048 -print_final_stats=1) >"$out" 2>&1
  rc=$?
  end=$(date +%s)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$out" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  units=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*$')
  cpu=$(grep -o 'cpu_seconds=[0-9.]*' "$out" | tail -1 | cut -d= -f2)
  crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - crashes_before ))
  line="target=$t commit=$commit seconds=$secs wall=$((end - start)) cpu_seconds=${cpu:-?} execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${units:-?} new_crashes=$crashes exit=$rc date=$(date -u +%FT%TZ)"
  echo "$line" | tee -a "$log"
  [ "$crashes" -gt 0 ] && { echo "crash output: $out" >&2; tail -40 "$out" >&2; } || rm -f "$out"
done
