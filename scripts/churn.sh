#!/usr/bin/env bash
# Connection turnover: CYCLES (default 1,000,000) connect / one request / close cycles from
# zring-churn (THREADS threads, sources spread over 127.0.0.2-200) against zring on each
# runtime and Condure 1.9.1, one after the other, each with the example handler. MODE is
# zring-churn's: close (Connection: close, the pattern that lost responses on io_uring),
# keepalive, or mixed (malformed requests and valid POSTs alternating).
#
# Per server one key=value line: the churn client's counts (every error kind; zero is the
# goal), then the server's fds and RSS before and after (settled 2 s), and whether every one
# of its MAXCONN slots still serves a request afterwards (slots_ok: a leaked slot would
# leave one of those waiting).
#
#   scripts/churn.sh                       # 1,000,000 cycles, zring uring + epoll + condure
#   CYCLES=50000 SERVERS="zring" scripts/churn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/load-lib.sh
CYCLES=${CYCLES:-1000000}
THREADS=${THREADS:-4}
MODE=${MODE:-close}
# start_server gives every server --stream-maxconn clients + 1000: 1,000 here.
MAXCONN=1000
SERVERS=${SERVERS:-"zring:uring zring:epoll condure"}
load_build
load_sysctls

fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# Holds n keep-alive connections at once, each sending GET /hello; prints how many were
# answered 200 within 5 s.
slots_served() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
for c in conns:
    c.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
ok = 0
for c in conns:
    try:
        if c.recv(4096).startswith(b"HTTP/1.1 200"):
            ok += 1
    except OSError:
        pass
print(ok)
PY
}

for spec in $SERVERS; do
  name=${spec%%:*}
  runtime=${spec#*:}
  [ "$runtime" = "$spec" ] && runtime=""
  label=$name${runtime:+-$runtime}
  port=$(free_port)
  if [ "$name" = condure ] && ! command -v condure >/dev/null; then
    echo "test=churn server=$label status=skipped reason=condure_not_installed"
    continue
  fi
  RUNTIME=${runtime:-uring} start_server "$name" "$port" 0
  sleep 1
  fds0=$(fd_count "$SERVER_PID") rss0=$(rss_kb "$SERVER_PID")
  line=$("$BIN/zring-churn" --target "127.0.0.1:$port" --cycles "$CYCLES" --threads "$THREADS" \
    --mode "$MODE" --max-secs 1800 || true)
  sleep 2
  fds1=$(fd_count "$SERVER_PID") rss1=$(rss_kb "$SERVER_PID")
  state=alive
  kill -0 "$SERVER_PID" 2>/dev/null || state=dead
  # The accept gate keeps a few slots per worker spare: fill to 3/4 of the limit.
  want=$(( MAXCONN * 3 / 4 ))
  served=0
  [ "$state" = alive ] && served=$(slots_served "$port" "$want" || echo 0)
  slots_ok=no
  [ "$served" = "$want" ] && slots_ok=yes
  echo "${line/test=churn /test=churn server=$label } fds_before=$fds0 fds_after=$fds1 rss_before_kb=$rss0 rss_after_kb=$rss1 slots_checked=$want slots_served=$served slots_ok=$slots_ok server_state=$state"
  kill "$SERVER_PID" "$HANDLER_PID" 2>/dev/null || true
  wait "$SERVER_PID" "$HANDLER_PID" 2>/dev/null || true
done
