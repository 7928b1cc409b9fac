#!/usr/bin/env bash
# Memory per idle keep-alive connection in Mongrel2 mode, zring (io_uring, epoll) beside
# Mongrel2 1.12.2 in one run: the same config and handler (examples/m2_handler.rs); N clients
# (default 4,000) each make one request through the handler and then stay connected and
# idle (scripts/idle_clients.py). Prints RSS before and after and the difference per
# connection (total, and marginal over the second half).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-4000}
command -v mongrel2 >/dev/null || { echo "mongrel2 is required (apt-get install mongrel2-core)"; exit 1; }
cargo build --release --bins -q
root=$(pwd)
dir=$(mktemp -d /tmp/zring-idle-m2.XXXXXX)
mkdir -p "$dir"/{logs,run,tmp}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
trap "exit 1" INT TERM
PORT=18310 SEND=18311 RECV=18312
cat >"$dir/m2.conf" <<CONF
h = Handler(send_spec='tcp://127.0.0.1:$SEND', send_ident='b0b0b0b0-0000-4000-8000-000000000001',
            recv_spec='tcp://127.0.0.1:$RECV', recv_ident='')
main = Server(uuid='b0b0b0b0-0000-4000-8000-0000000000aa', access_log='/logs/access.log',
    error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',
    pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port=$PORT,
    hosts=[Host(name='localhost', routes={'/': h})])
settings = {'server.daemonize': 0, 'superpoll.max_fd': $(( N + 1000 ))}
servers = [main]
CONF
(cd "$dir" && LOGNAME=zring m2sh load -config m2.conf -db config.sqlite >/dev/null 2>&1)
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
wait_ok() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/hello" >/dev/null && return 0; sleep 0.1; done; echo "no answer on $PORT"; exit 1; }
start_clients() { # tag count
  mkfifo "$dir/$1.in"
  /usr/bin/python3 scripts/idle_clients.py 127.0.0.1 "$PORT" "$2" <"$dir/$1.in" >"$dir/$1.out" 2>&1 &
  pids+=("$!")
  exec {fd}>"$dir/$1.in"; fds+=("$fd")
  for _ in $(seq 1200); do grep -q ready "$dir/$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$dir/$1.out" || { echo "clients not ready: $(tail -1 "$dir/$1.out")"; return 1; }
  sleep "${SETTLE:-11}" # zring returns a burst's freed heap pages every 10 s (malloc_trim)
}
measure() { # name cmd...
  local name=$1; shift
  (cd "$dir" && exec "$@") >"$dir/$name.log" 2>&1 & local cm=$!
  "$root/target/release/zring-m2-handler" "tcp://127.0.0.1:$SEND" "tcp://127.0.0.1:$RECV" >/dev/null 2>&1 & local h=$!
  pids+=("$cm" "$h")
  wait_ok
  fds=()
  local before half full half_n=$(( N / 2 ))
  before=$(rss_kb "$cm")
  start_clients "$name.a" "$half_n"; half=$(rss_kb "$cm")
  start_clients "$name.b" "$(( N - half_n ))"; full=$(rss_kb "$cm")
  for fd in "${fds[@]}"; do exec {fd}>&-; done
  kill "$cm" "$h"; wait "$cm" "$h" 2>/dev/null || true
  sleep 1
  printf '%-14s RSS idle %7s KiB, %s conns %8s KiB: total %6s B/conn, marginal %6s B/conn\n' \
    "$name" "$before" "$N" "$full" "$(( (full - before) * 1024 / N ))" "$(( (full - half) * 1024 / (N - half_n) ))"
}
[ -n "${ONLY_M2:-}" ] || measure zring-uring "$root/target/release/zring" --m2-config m2.conf --runtime uring
[ -n "${ONLY_M2:-}" ] || measure zring-epoll "$root/target/release/zring" --m2-config m2.conf --runtime epoll
measure mongrel2 mongrel2 config.sqlite b0b0b0b0-0000-4000-8000-0000000000aa
