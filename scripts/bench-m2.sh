#!/usr/bin/env bash
# Mongrel2 mode throughput, side by side in one run: the same Mongrel2 config and the same
# handler (examples/m2_handler.rs, Rust + zmq) behind zring (io_uring), zring (epoll) and
# Mongrel2 1.12.2 (mongrel2-core), measured with
#   wrk -t$THREADS -c$CONNS -d$SECS http://127.0.0.1:PORT/hello
# Prints req/s for each and the ratio to Mongrel2. Defaults: 2 threads, 64 connections, 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} CONNS=${CONNS:-64} SECS=${SECS:-10} WORKERS=${WORKERS:-2}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
command -v mongrel2 >/dev/null || { echo "mongrel2 is required (apt-get install mongrel2-core)"; exit 1; }
cargo build --release --bins -q
root=$(pwd)
dir=$(mktemp -d /tmp/zring-bench-m2.XXXXXX)
mkdir -p "$dir"/{logs,run,tmp}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
trap "exit 1" INT TERM
PORT=18300 SEND=18301 RECV=18302
cat >"$dir/m2.conf" <<CONF
h = Handler(send_spec='tcp://127.0.0.1:$SEND', send_ident='b0b0b0b0-0000-4000-8000-000000000001',
            recv_spec='tcp://127.0.0.1:$RECV', recv_ident='')
main = Server(uuid='b0b0b0b0-0000-4000-8000-0000000000aa', access_log='/logs/access.log',
    error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',
    pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port=$PORT,
    hosts=[Host(name='localhost', routes={'/': h})])
settings = {'server.daemonize': 0, 'superpoll.max_fd': 20000}
servers = [main]
CONF
wait_ok() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $PORT"; exit 1; }

run_one() { # name cmd...
  local name=$1; shift
  (cd "$dir" && exec "$@") >"$dir/$name.log" 2>&1 & local cm=$!
  "$root/target/release/zring-m2-handler" "tcp://127.0.0.1:$SEND" "tcp://127.0.0.1:$RECV" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok
  local rps
  rps=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PORT/hello" | awk '/Requests\/sec/ {print $2}')
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  sleep 1 # ports free again
  echo "$rps"
}

zu=$(run_one zu "$root/target/release/zring" --m2-config m2.conf --runtime uring --workers "$WORKERS")
ze=$(run_one ze "$root/target/release/zring" --m2-config m2.conf --runtime epoll --workers "$WORKERS")
(cd "$dir" && LOGNAME=zring m2sh load -config m2.conf -db config.sqlite >/dev/null 2>&1)
m2=$(run_one m2 mongrel2 config.sqlite b0b0b0b0-0000-4000-8000-0000000000aa)

printf '\nwrk -t%s -c%s -d%ss /hello, examples/m2_handler.rs, zring with %s workers\n' "$THREADS" "$CONNS" "$SECS" "$WORKERS"
printf '%-16s %12s\n' "zring io_uring" "$zu" "zring epoll" "$ze" "mongrel2 1.12.2" "$m2"
awk -v a="$zu" -v b="$ze" -v c="$m2" 'BEGIN { printf "ratio zring(io_uring)/mongrel2: %.2fx\nratio zring(epoll)/mongrel2:    %.2fx\n", a/c, b/c }'
