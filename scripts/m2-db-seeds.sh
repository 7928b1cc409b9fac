#!/usr/bin/env bash
# Writes the m2_db fuzz target's seeds: the m2_config seeds loaded by the real m2sh
# (Debian's mongrel2-core) into databases, as fuzz/corpus/m2_db/seed-*.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v m2sh >/dev/null || scripts/setup.sh test
out=fuzz/corpus/m2_db
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for conf in fuzz/corpus/m2_config/seed-*; do
  name=$(basename "$conf")
  cp "$conf" "$work/$name.conf"
  (cd "$work" && LOGNAME=zring m2sh load -config "$name.conf" -db "$name.sqlite" >/dev/null)
  cp "$work/$name.sqlite" "$out/$name"
done
ls -l "$out"
