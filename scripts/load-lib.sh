# Shared by scripts/fanout.sh and scripts/c1m.sh (sourced, not run): sysctls set for the
# run and restored on exit, the processes a script starts (killed on exit by pid, and only
# those), and starting a connection manager with the example handler in front of it.
# Expects `set -euo pipefail` and `cd` to the repo root from the caller.

LOAD_PIDS=()
LOAD_SYSCTLS=() # "name=old value" pairs to restore
LOAD_DIR=$(mktemp -d /tmp/zring-load.XXXXXX)
PROFILE=${PROFILE:-release} # CI passes PROFILE=debug: the binaries `cargo test` built

load_cleanup() {
  local p kv
  for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${LOAD_PIDS[@]}"; do
    # Bounded wait: a process holding many sockets takes a moment to close them.
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  for kv in "${LOAD_SYSCTLS[@]}"; do sysctl -q -w "$kv" >/dev/null 2>&1 || echo "could not restore $kv" >&2; done
  [ -n "${KEEP_LOGS:-}" ] || rm -rf "$LOAD_DIR"
}
trap load_cleanup EXIT
trap 'exit 130' INT TERM

# set_sysctl NAME VALUE: sets it for the run, remembering the old value for load_cleanup.
set_sysctl() {
  local old
  # Inside a network namespace of its own (scripts/in-netns.sh) the global ones
  # (netdev_max_backlog, tcp_mem) are absent: in-netns.sh sets them outside.
  [ -e "/proc/sys/${1//.//}" ] || return 0
  old=$(sysctl -n "$1" | tr '\t' ' ')
  [ "$old" = "$2" ] && return 0
  if sysctl -q -w "$1=$2" >/dev/null 2>&1; then
    LOAD_SYSCTLS+=("$1=$old")
  else
    echo "warning: could not set $1=$2 (not root?); keeping $old" >&2
  fi
}

# What loopback load needs (docs/tuning.md): listen backlogs, room in the per-CPU input
# backlog for a fan-out burst (loopback drops there otherwise, and each drop costs a
# 200 ms+ retransmit), and TCP memory for many sockets. Not ip_local_port_range: the
# clients spread over 199 source addresses, and 199 x the default 28k ports is 5.6M
# connections per server port; widening it would hand out ports other programs on the
# box may be about to listen on.
load_sysctls() {
  set_sysctl net.core.somaxconn 65535
  set_sysctl net.ipv4.tcp_max_syn_backlog 65535
  set_sysctl net.core.netdev_max_backlog 65536
  local mem
  [ -e /proc/sys/net/ipv4/tcp_mem ] || return 0
  read -r -a mem < <(sysctl -n net.ipv4.tcp_mem)
  if [ "${mem[2]}" -lt 4194304 ]; then set_sysctl net.ipv4.tcp_mem "1048576 2097152 4194304"; fi
}

load_build() {
  if [ "$PROFILE" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
  BIN=target/$PROFILE
}

# free_port: a port nothing listens on (from 20000-31999, below the ephemeral range).
free_port() {
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    # Listening sockets (state 0A) in /proc/net/tcp{,6}, port in hex after the colon.
    awk -v port="$(printf '%04X' "$p")" '$4 == "0A" { split($2, a, ":"); if (a[2] == port) found = 1 }
      END { exit found ? 0 : 1 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "no free port" >&2
  return 1
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
# The slab caches a socket lives in (docs: limits.md), active objects x size, in KiB: far
# less noisy than all of Slab on a box where other programs churn dentries and buffers.
sock_slab_kb() {
  awk '$1 ~ /^(TCP|tw_sock_TCP|request_sock_TCP|sock_inode_cache|filp|dentry|eventpoll_epi)$/ { s += $2 * $4 }
    END { printf "%d\n", s / 1024 }' /proc/slabinfo 2>/dev/null || echo 0
}

wait_http() { # port: until /hello answers (bounded: 10 s)
  for _ in $(seq 100); do curl -sf -m 1 "http://127.0.0.1:$1/hello" >/dev/null && return 0; sleep 0.1; done
  echo "no answer on port $1" >&2
  return 1
}

# make_tls_ids: a throwaway CA and a certificate for `localhost` it signed (P-256, openssl),
# in $LOAD_DIR/ids as zring reads identities (localhost.crt, localhost.key); the clients
# trust $LOAD_DIR/ids/ca.crt. A CA and a leaf, not one self-signed certificate: rustls
# (webpki) refuses a CA certificate as the server's own.
make_tls_ids() {
  local d="$LOAD_DIR/ids"
  command -v openssl >/dev/null || { echo "openssl is required for --tls (scripts/setup.sh)" >&2; return 1; }
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=zring-load-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$d/localhost.key" -out "$d/localhost.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/leaf.ext"
  openssl x509 -req -in "$d/localhost.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/leaf.ext" -out "$d/localhost.crt" 2>/dev/null
  TLS_CA="$d/ca.crt"
}

# start_server NAME PORT CLIENTS: starts zring (SERVER=zring, the default) or condure
# and the example handler; sets SERVER_PID and HANDLER_PID. zring runs WORKERS (default 2,
# one per core) workers; each opens as many io_uring rings as its share of CLIENTS needs
# (a ring's direct-descriptor table holds up to RLIMIT_NOFILE, 20,000 here). ZRING_ARGS adds
# flags; ZRING_BIN runs another zring binary (an older build, for a before/after in one
# run) and ZRING_WRAP a command that execs it (scripts/heaptrack-exec.sh OUT). With DEFLATE=1 the server runs with --compression; with TLS_PORT set it also
# listens there with TLS (make_tls_ids first), PORT staying plain for the fan-out trigger.
start_server() {
  local name=$1 port=$2 n=$3 maxconn=$(( $3 + 1000 ))
  local spec="ipc://$LOAD_DIR/$name"
  local extra=()
  [ -n "${DEFLATE:-}" ] && extra+=(--compression)
  [ -n "${TLS_PORT:-}" ] && extra+=(--listen "127.0.0.1:$TLS_PORT,tls,default-cert=localhost" --tls-identities-dir "$LOAD_DIR/ids")
  case "$name" in
    zring)
      local workers=${WORKERS:-2}
      # shellcheck disable=SC2086
      ${ZRING_WRAP:-} "${ZRING_BIN:-$BIN/zring}" --runtime "${RUNTIME:-uring}" --workers "$workers" --stream-maxconn "$maxconn" \
        --listen "127.0.0.1:$port" --zclient-stream "$spec" "${extra[@]}" ${ZRING_ARGS:-} >"$LOAD_DIR/$name.log" 2>&1 &
      ;;
    condure)
      command -v condure >/dev/null || { echo "condure is not installed" >&2; return 1; }
      condure --stream-maxconn "$maxconn" --listen "127.0.0.1:$port" --zclient-stream "$spec" "${extra[@]}" \
        >"$LOAD_DIR/$name.log" 2>&1 &
      ;;
    mongrel2 | zring-m2)
      start_m2 "$name" "$port" "$maxconn"
      return
      ;;
    *) echo "unknown server $name (zring, condure, mongrel2 or zring-m2)" >&2; return 1 ;;
  esac
  SERVER_PID=$!
  LOAD_PIDS+=("$SERVER_PID")
  HANDLER_START=$(date +%s.%N) # its --stats lines count seconds from about here
  "$BIN/zring-example-handler" --stream "$spec" --stats "${STATS_SECS:-5}" >"$LOAD_DIR/handler.log" 2>&1 &
  HANDLER_PID=$!
  LOAD_PIDS+=("$HANDLER_PID")
  wait_http "$port" || { echo "$name $(server_state "$name")" >&2; return 1; }
}

# start_m2 NAME PORT MAXCONN: Mongrel2 1.12.2 (NAME=mongrel2) or zring --m2-config
# (NAME=zring-m2) serving one config that routes every path to examples/m2_handler.rs
# (zring-m2-handler: hello, WebSocket echo, POST /broadcast to /ws/broadcast members).
# Sets SERVER_PID and HANDLER_PID like start_server.
start_m2() {
  local name=$1 port=$2 maxconn=$3 send recv d="$LOAD_DIR/m2"
  send=$(free_port) recv=$(free_port)
  mkdir -p "$d"/{logs,run,tmp}
  cat >"$d/m2.conf" <<CONF
h = Handler(send_spec='tcp://127.0.0.1:$send', send_ident='b0b0b0b0-0000-4000-8000-000000000001',
            recv_spec='tcp://127.0.0.1:$recv', recv_ident='')
main = Server(uuid='b0b0b0b0-0000-4000-8000-0000000000aa', access_log='/logs/access.log',
    error_log='/logs/error.log', chroot='./', default_host='localhost', name='main',
    pid_file='/run/mongrel2.pid', bind_addr='127.0.0.1', port=$port,
    hosts=[Host(name='localhost', routes={'/': h})])
settings = {'server.daemonize': 0, 'superpoll.max_fd': $(( maxconn < 19000 ? maxconn : 19000 ))}
servers = [main]
CONF
  local root
  root=$(pwd)
  case "$name" in
    mongrel2)
      command -v mongrel2 >/dev/null || { echo "mongrel2 is not installed" >&2; return 1; }
      rm -f "$d/config.sqlite" "$d/run/mongrel2.pid"
      (cd "$d" && LOGNAME=zring m2sh load -config m2.conf -db config.sqlite >/dev/null 2>&1)
      (cd "$d" && exec mongrel2 config.sqlite b0b0b0b0-0000-4000-8000-0000000000aa) >"$LOAD_DIR/$name.log" 2>&1 &
      ;;
    zring-m2)
      # shellcheck disable=SC2086
      (cd "$d" && exec "$root/$BIN/zring" --m2-config m2.conf --runtime "${RUNTIME:-uring}" \
        --workers "${WORKERS:-2}" ${ZRING_ARGS:-}) >"$LOAD_DIR/$name.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  LOAD_PIDS+=("$SERVER_PID")
  HANDLER_START=$(date +%s.%N)
  "$BIN/zring-m2-handler" "tcp://127.0.0.1:$send" "tcp://127.0.0.1:$recv" >"$LOAD_DIR/handler.log" 2>&1 &
  HANDLER_PID=$!
  LOAD_PIDS+=("$HANDLER_PID")
  wait_http "$port" || { echo "$name $(server_state "$name")" >&2; return 1; }
}

# stop_server: ends the SERVER_PID and HANDLER_PID of start_server (bounded wait) and
# forgets them, so load_cleanup never signals a pid the system may have reused.
stop_server() {
  local p q keep=()
  for p in "$SERVER_PID" "$HANDLER_PID"; do kill "$p" 2>/dev/null || true; done
  for p in "$SERVER_PID" "$HANDLER_PID"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for q in "${LOAD_PIDS[@]}"; do [ "$q" = "$SERVER_PID" ] || [ "$q" = "$HANDLER_PID" ] || keep+=("$q"); done
  LOAD_PIDS=("${keep[@]}")
}

# server_state NAME: "alive", or "crashed:<first error line>" (a crash is a result).
server_state() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then echo alive; return; fi
  local why rc=0 how
  # Its exit status: a $(...) subshell still has it if the process ended before the call.
  wait "$SERVER_PID" 2>/dev/null || rc=$?
  how="exit_$rc"
  [ "$rc" -gt 128 ] && how="signal_$(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 )))"
  [ "$rc" = 127 ] && how=exited # not our child (or already reaped): status unknown
  why=$(grep -m1 -E 'panick|error|ERR|Abort|fatal|unknown|invalid' "$LOAD_DIR/$1.log" 2>/dev/null || true)
  why=$(tr -s ' \t' '__' <<<"$why" | cut -c1-100)
  echo "crashed:$how${why:+:$why}"
}

# pick FIELD LINE: the value of FIELD in a key=value line (empty if absent).
pick() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }

# check_kv LINE KEY...: the line is all key=value tokens and has every KEY.
check_kv() {
  local line=$1 tok k; shift
  for tok in $line; do [[ "$tok" =~ ^[a-z0-9_]+=[^[:space:]]*$ ]] || { echo "not key=value: $tok" >&2; return 1; }; done
  for k in "$@"; do [[ " $line" == *" $k="* ]] || { echo "missing key $k" >&2; return 1; }; done
}
