#!/usr/bin/env bash
# User-space memory per idle keep-alive connection, zring (io_uring and epoll) vs Condure
# 1.9.1 in one run: N clients (default 15,000; the fd limit here is 20,000 per process)
# each make one request to the example handler and then stay connected and idle.
# Prints RSS before and after and the difference per connection.
#
# With --ws (or MODE=ws) the clients are idle WebSockets instead: each completes the
# handshake through the example handler (/ws, 101 with credits) and then stays idle. A CM
# that refuses the upgrade is reported as such.
#
# With --tls (or MODE=tls) the clients are idle HTTPS keep-alive connections: a TLS handshake
# (Python ssl, TLS 1.3 where the server offers it), one request, then idle. The certificate is
# a throwaway P-256 one made by openssl for this run; zring and Condure read it from the same
# identities directory.
#
# ZRING_BASELINE=DIR also measures DIR/zring (an older build) on each runtime, right after
# the current build on the same runtime (rows `base-uring`, `base-epoll`).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-15000}
MODE=${MODE:-http}
[ "${1:-}" = "--ws" ] && MODE=ws
[ "${1:-}" = "--tls" ] && MODE=tls
ws_flag=()
[ "$MODE" = ws ] && ws_flag=(--ws)
[ "$MODE" = tls ] && ws_flag=(--tls)
cargo build --release --bins -q
dir=$(mktemp -d /tmp/zring-idle.XXXXXX)
tls_spec="" tls_args=() scheme=http
if [ "$MODE" = tls ]; then
  mkdir "$dir/ids"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$dir/ids/localhost.key" -out "$dir/ids/localhost.crt" 2>/dev/null
  export ZRING_CA="$dir/ids/localhost.crt"
  tls_spec=",tls,default-cert=localhost" tls_args=(--tls-identities-dir "$dir/ids") scheme=https
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
# A connection manager that dies under the load is a result, not a script error.
crashed() { # name pid: true (and prints the result line) if the process is gone
  kill -0 "$2" 2>/dev/null && return 1
  printf '%-12s %-4s crashed with %s connections: %s\n' "$1" "$MODE" "$N" \
    "$(grep -m1 -E 'panicked|error|Abort' "$dir/$1.log" | cut -c1-120)"
}
wait_ok() { for _ in $(seq 100); do curl -sf ${ZRING_CA:+--cacert "$ZRING_CA"} --resolve "localhost:$1:127.0.0.1" "$scheme://localhost:$1/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1"; exit 1; }

start_clients() { # name port count tag: runs idle_clients.py until its fifo closes
  local name=$1 port=$2 count=$3 tag=$4
  mkfifo "$dir/$name.$tag.in"
  /usr/bin/python3 scripts/idle_clients.py "${ws_flag[@]}" 127.0.0.1 "$port" "$count" <"$dir/$name.$tag.in" >"$dir/$name.$tag.out" 2>&1 &
  pids+=("$!")
  exec {fd}>"$dir/$name.$tag.in"; fds+=("$fd")
  for _ in $(seq 1200); do grep -q ready "$dir/$name.$tag.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$dir/$name.$tag.out" || return 1
  sleep "${SETTLE:-11}" # zring returns a burst's freed heap pages every 10 s (malloc_trim)
}

measure() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 & local cm=$!
  target/release/zring-example-handler --stream "ipc://$dir/$name" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok "$port"
  local before half full half_n=$(( N / 2 ))
  fds=()
  if [ "$MODE" = ws ] && ! /usr/bin/python3 scripts/idle_clients.py --ws 127.0.0.1 "$port" 1 </dev/null >"$dir/$name.probe" 2>&1; then
    printf '%-12s %s idle WebSockets: n/a, the upgrade was refused (%s)\n' "$name" "$N" "$(tail -1 "$dir/$name.probe" | cut -c1-80)"
    kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
    return 0
  fi
  before=$(rss_kb "$cm")
  local ok=1
  start_clients "$name" "$port" "$half_n" a && half=$(rss_kb "$cm") &&
    start_clients "$name" "$port" "$(( N - half_n ))" b && full=$(rss_kb "$cm") || ok=0
  for fd in "${fds[@]}"; do exec {fd}>&-; done
  if crashed "$name" "$cm" || [ "$ok" = 0 ] || [ -z "$full" ]; then
    kill -0 "$cm" 2>/dev/null && printf '%-12s %-4s clients did not get ready: %s\n' "$name" "$MODE" \
      "$(tail -n 1 "$dir/$name".*.out 2>/dev/null | tail -n 1 | cut -c1-120)"
    kill "$cm" 2>/dev/null
    kill "$h" 2>/dev/null; wait "$cm" "$h" 2>/dev/null || true
    return 0
  fi
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  # total: everything the process grew by, fixed pools included; marginal: the growth of
  # the second half alone, once buffer rings and pools are warm: the cost of one more.
  printf '%-12s %-4s RSS idle %7s KiB, %s conns %8s KiB: total %6s B/conn, marginal %6s B/conn\n' \
    "$name" "$MODE" "$before" "$N" "$full" "$(( (full - before) * 1024 / N ))" "$(( (full - half) * 1024 / (N - half_n) ))"
}

max=$(( N + 100 ))
measure "zring-uring" 18200 target/release/zring --runtime uring --stream-maxconn "$max" --listen "127.0.0.1:18200$tls_spec" "${tls_args[@]}" --zclient-stream "ipc://$dir/zring-uring"
if [ -n "${ZRING_BASELINE:-}" ]; then
  measure "base-uring" 18203 "$ZRING_BASELINE/zring" --runtime uring --stream-maxconn "$max" --listen "127.0.0.1:18203$tls_spec" "${tls_args[@]}" --zclient-stream "ipc://$dir/base-uring"
fi
measure "zring-epoll" 18201 target/release/zring --runtime epoll --stream-maxconn "$max" --listen "127.0.0.1:18201$tls_spec" "${tls_args[@]}" --zclient-stream "ipc://$dir/zring-epoll"
if [ -n "${ZRING_BASELINE:-}" ]; then
  measure "base-epoll" 18204 "$ZRING_BASELINE/zring" --runtime epoll --stream-maxconn "$max" --listen "127.0.0.1:18204$tls_spec" "${tls_args[@]}" --zclient-stream "ipc://$dir/base-epoll"
fi
measure "condure" 18202 condure --stream-maxconn "$max" --listen "127.0.0.1:18202$tls_spec" "${tls_args[@]}" --zclient-stream "ipc://$dir/condure"
