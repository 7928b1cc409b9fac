#!/usr/bin/env bash
# Builds zring and the example handler and runs both: zring on 127.0.0.1:8000, talking
# ZHTTP to the handler over ipc sockets in a temporary directory. With openssl installed it
# also serves TLS on 127.0.0.1:8443 with a throwaway certificate for `localhost` made in that
# directory. Ctrl-C stops both. Installs what building needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bins
dir=$(mktemp -d /tmp/zring-example.XXXXXX)
tls=()
if command -v openssl >/dev/null 2>&1; then
  mkdir "$dir/ids"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$dir/ids/localhost.key" -out "$dir/ids/localhost.crt" 2>/dev/null
  tls=(--listen 127.0.0.1:8443,tls,default-cert=localhost --tls-identities-dir "$dir/ids")
fi
target/release/zring --listen 127.0.0.1:8000 --listen 127.0.0.1:8001,req "${tls[@]}" \
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
MSG
if [ "${#tls[@]}" -gt 0 ]; then
  cat <<MSG
and TLS on 127.0.0.1:8443 (certificate: $dir/ids/localhost.crt):
  curl --cacert $dir/ids/localhost.crt https://localhost:8443/hello
MSG
fi
echo "Ctrl-C stops zring and the handler."
wait $zring_pid
