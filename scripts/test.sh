#!/usr/bin/env bash
# The test command: formatting, lints, unit and integration tests (every integration case
# runs on both runtimes, against real sockets, real ZeroMQ, condure and pushpin), and a
# short fuzz smoke run of every parser, and the small versions of the load scripts.
# Installs what is missing first (scripts/setup.sh test: needs root on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# cargo-nextest when the machine has it, else cargo's own runner (same tests).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --no-fail-fast
else
  cargo test --all-targets --no-fail-fast
fi
scripts/fuzz-smoke.sh
# The load tools' small runs (issue 7): they work and their key=value lines parse.
scripts/load-smoke.sh
