#!/usr/bin/env bash
# TLS throughput, side by side in one run: zring (io_uring), zring (epoll) and Condure 1.9.1
# on a tls listener, each in front of the same example handler, measured with wrk (OpenSSL):
#   handshakes/s: wrk -t$THREADS -c$CONNS -d$SECS -H 'Connection: close' https://.../hello
#                 (every request is a new connection and a full handshake: no resumption)
#   keep-alive:   wrk -t$THREADS -c$CONNS -d$SECS https://.../hello
# The certificate is a throwaway P-256 one (ECDSA, the common modern choice) made by openssl
# for this run; KEY=rsa uses a 2048-bit RSA key instead. Prints both figures for each and
# the ratios, and the CPU time (user + system) each connection manager spent per request:
# wrk shares the 2 cores and does the client half of every handshake, so throughput is
# capped by the client as much as by the server; CPU per request is the server's own cost.
# Defaults: 2 threads, 64 connections, 10 s, 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} CONNS=${CONNS:-64} SECS=${SECS:-10} WORKERS=${WORKERS:-2} KEY=${KEY:-ec}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
command -v condure >/dev/null || { echo "condure is required (apt-get install condure)"; exit 1; }
command -v openssl >/dev/null || { echo "openssl is required (apt-get install openssl)"; exit 1; }
cargo build --release --bins -q
dir=$(mktemp -d /tmp/zring-bench-tls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

mkdir "$dir/ids"
case "$KEY" in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "KEY is ec or rsa"; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$dir/ids/localhost.key" -out "$dir/ids/localhost.crt" 2>/dev/null

wait_ok() { for _ in $(seq 100); do curl -sf --cacert "$dir/ids/localhost.crt" --resolve "localhost:$1:127.0.0.1" "https://localhost:$1/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1"; exit 1; }

run_one() { # name port cmd...  → "handshakes/s keepalive-req/s"
  local name=$1 port=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 & local cm=$!
  target/release/zring-example-handler --stream "ipc://$dir/$name" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok "$port"
  local hs ka t0 t1 t2 hs_n ka_n out
  t0=$(cpu_ticks "$cm")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" -H 'Connection: close' "https://127.0.0.1:$port/hello")
  hs=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); hs_n=$(awk '/requests in/ {print $1}' <<<"$out")
  t1=$(cpu_ticks "$cm")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "https://127.0.0.1:$port/hello")
  ka=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); ka_n=$(awk '/requests in/ {print $1}' <<<"$out")
  t2=$(cpu_ticks "$cm")
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  # CPU the connection manager spent per request (user + system), in microseconds.
  echo "$hs $ka $(( (t1 - t0) * 1000000 / hz / hs_n )) $(( (t2 - t1) * 1000000 / hz / ka_n ))"
}
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

tls=(--tls-identities-dir "$dir/ids")
read -r zu_hs zu_ka zu_hc zu_kc < <(run_one zu 18300 target/release/zring --runtime uring --workers "$WORKERS" --listen 127.0.0.1:18300,tls,default-cert=localhost "${tls[@]}" --zclient-stream "ipc://$dir/zu")
read -r ze_hs ze_ka ze_hc ze_kc < <(run_one ze 18301 target/release/zring --runtime epoll --workers "$WORKERS" --listen 127.0.0.1:18301,tls,default-cert=localhost "${tls[@]}" --zclient-stream "ipc://$dir/ze")
read -r co_hs co_ka co_hc co_kc < <(run_one co 18302 condure --workers "$WORKERS" --listen 127.0.0.1:18302,tls,default-cert=localhost "${tls[@]}" --zclient-stream "ipc://$dir/co")

printf '\nwrk -t%s -c%s -d%ss https://.../hello, %s key, example handler, %s workers\n' "$THREADS" "$CONNS" "$SECS" "$KEY" "$WORKERS"
printf '%-16s %14s %16s %22s %22s\n' "" "handshakes/s" "keep-alive req/s" "CPU us/handshake+req" "CPU us/keep-alive req" \
  "zring io_uring" "$zu_hs" "$zu_ka" "$zu_hc" "$zu_kc" "zring epoll" "$ze_hs" "$ze_ka" "$ze_hc" "$ze_kc" \
  "condure 1.9.1" "$co_hs" "$co_ka" "$co_hc" "$co_kc"
awk -v a="$zu_hs" -v b="$ze_hs" -v c="$co_hs" -v x="$zu_ka" -v y="$ze_ka" -v z="$co_ka" 'BEGIN {
  printf "ratio zring(io_uring)/condure: handshakes %.2fx, keep-alive %.2fx\n", a/c, x/z
  printf "ratio zring(epoll)/condure:    handshakes %.2fx, keep-alive %.2fx\n", b/c, y/z }'
awk -v a="$zu_hc" -v b="$ze_hc" -v c="$co_hc" -v x="$zu_kc" -v y="$ze_kc" -v z="$co_kc" 'BEGIN {
  printf "CPU per request, condure/zring(io_uring): handshakes %.2fx, keep-alive %.2fx\n", c/a, z/x
  printf "CPU per request, condure/zring(epoll):    handshakes %.2fx, keep-alive %.2fx\n", c/b, z/y }'
