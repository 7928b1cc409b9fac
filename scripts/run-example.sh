#!/usr/bin/env bash
# Builds zring and the example handler and runs both: zring on 127.0.0.1:8000, talking
# ZHTTP to the handler over ipc sockets in a temporary directory. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
dir=$(mktemp -d /tmp/zring-example.XXXXXX)
target/release/zring --listen 127.0.0.1:8000 --listen 127.0.0.1:8001,req \
  --zclient-stream "ipc://$dir/zring" --zclient-req "ipc://$dir/zring-req" "$@" &
zring_pid=$!
target/release/zring-example-handler --stream "ipc://$dir/zring" --req "ipc://$dir/zring-req" &
handler_pid=$!
trap 'kill $zring_pid $handler_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
sleep 0.5
cat <<MSG

zring is listening on 127.0.0.1:8000 (stream mode) and 127.0.0.1:8001 (req mode). Try:
  curl http://127.0.0.1:8000/hello
  curl -d 'some body' http://127.0.0.1:8000/echo
  curl -N http://127.0.0.1:8000/stream
  curl http://127.0.0.1:8001/echo
Ctrl-C stops zring and the handler.
MSG
wait $zring_pid
