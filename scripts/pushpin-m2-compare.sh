#!/usr/bin/env bash
# Pushpin 1.36's Mongrel2 stack (services=mongrel2,m2adapter,zurl,pushpin-proxy,
# pushpin-handler) with zring in mongrel2's place (mongrel2_bin = a symlink named `mongrel2`)
# and with mongrel2-core 1.12.2 itself, one after the other in one run, the same origin
# (scripts/grip_origin.py) and the same checks:
#   1. requests/s through the proxy: wrk, keep-alive, DURATION seconds, CONNS connections, on
#      /hello (origin: a plain 200);
#   2. memory per idle streaming connection: STREAMS clients each open a GRIP HTTP stream
#      (/stream: Grip-Hold: stream), BATCH at a time, and hold it (scripts/idle_clients.py);
#      the RSS growth of the mongrel2 (or zring) process Pushpin started, SETTLE s after the
#      last stream opened, divided by STREAMS.
# Prints one key=value line per server, then one with the ratios (zring / mongrel2).
#   DURATION=10 CONNS=64 STREAMS=2000 BATCH=100 scripts/pushpin-m2-compare.sh [--results FILE]
# Needs pushpin, mongrel2-core, wrk (scripts/setup.sh test). Everything is on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10} CONNS=${CONNS:-64} STREAMS=${STREAMS:-2000} SETTLE=${SETTLE:-11} BATCH=${BATCH:-100}
results=
[ "${1:-}" = "--results" ] && results=${2:?--results FILE}
for b in pushpin m2adapter m2sh zurl mongrel2 wrk curl; do
  command -v "$b" >/dev/null || { echo "$b is required (scripts/setup.sh test)"; exit 1; }
done
cargo build --release --bins -q
root=$(pwd)
dir=$(mktemp -d /tmp/zring-ppm2.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $dir" >&2 || rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 1" INT TERM
mkdir -p "$dir/bin"
ln -s "$root/target/release/zring" "$dir/bin/mongrel2"

# A free TCP port on loopback (bound and released by the kernel's choice).
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

origin_port=$(free_port)
/usr/bin/python3 scripts/grip_origin.py "$origin_port" >"$dir/origin.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do grep -q ready "$dir/origin.log" && break; sleep 0.1; done

# /etc/pushpin/pushpin.conf with this run's ports, rundir and mongrel2_bin (as tests/pushpin_m2.rs).
pushpin_conf() { # tag mongrel2_bin http_port
  local d=$dir/$1
  mkdir -p "$d/run"
  echo "* 127.0.0.1:$origin_port" >"$d/routes"
  /usr/bin/python3 - "$d" "$2" "$3" $(free_port) $(free_port) $(free_port) $(free_port) <<'PY'
import configparser, sys
d, m2bin, http, p1, p2, p3, p4 = sys.argv[1:]
c = configparser.ConfigParser(interpolation=None)
c.optionxform = str
c.read("/etc/pushpin/pushpin.conf")
c["global"].update(rundir=f"{d}/run", port_offset="0")
c["runner"].update(services="mongrel2,m2adapter,zurl,pushpin-proxy,pushpin-handler",
                   http_port=f"127.0.0.1:{http}", log_level="2", mongrel2_bin=m2bin,
                   logdir=f"{d}/log")
c["proxy"].update(routesfile=f"{d}/routes",
                  zurl_out_specs="ipc://{rundir}/{ipc_prefix}zurl-in",
                  zurl_out_stream_specs="ipc://{rundir}/{ipc_prefix}zurl-in-stream",
                  zurl_in_specs="ipc://{rundir}/{ipc_prefix}zurl-out")
c["handler"].update(push_in_spec=f"tcp://127.0.0.1:{p2}", push_in_sub_specs=f"tcp://127.0.0.1:{p3}",
                    push_in_http_addr="127.0.0.1", push_in_http_port=p1,
                    command_spec=f"tcp://127.0.0.1:{p4}")
with open(f"{d}/pushpin.conf", "w") as f:
    c.write(f)
PY
}

measure() { # tag mongrel2_bin
  local tag=$1 bin=$2 http pp pid code=
  http=$(free_port)
  pushpin_conf "$tag" "$bin" "$http"
  mkdir -p "$dir/$tag/log"
  (cd "$dir/$tag" && LOGNAME=zring exec pushpin --config="$dir/$tag/pushpin.conf") >"$dir/$tag/runner.log" 2>&1 &
  pp=$!
  pids+=("$pp")
  # Served once pushpin-handler is up too (/stream answers 500 before that).
  for _ in $(seq 300); do
    code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/stream" || true)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { echo "$tag: the stack does not serve /stream ($code)"; tail -20 "$dir/$tag/runner.log"; exit 1; }
  pid=$(cat "$dir/$tag/run/mongrel2_$http.pid")
  echo "$tag: server pid $pid, $(readlink -f "/proc/$pid/exe")" >&2
  # 1. Requests/s.
  wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$http/hello" >"$dir/$tag/wrk.txt"
  local rps non2xx errors
  rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' "$dir/$tag/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/$tag/wrk.txt"); non2xx=${non2xx:-0}
  errors=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$dir/$tag/wrk.txt"); errors=${errors:-0}
  # 2. Memory per idle GRIP stream.
  sleep "$SETTLE" # zring returns freed heap pages every 10 s (malloc_trim)
  local before after
  before=$(rss_kb "$pid")
  mkfifo "$dir/$tag/clients.in"
  /usr/bin/python3 scripts/idle_clients.py --until="stream open" --batch="${BATCH:-100}" 127.0.0.1 "$http" "$STREAMS" /stream \
    <"$dir/$tag/clients.in" >"$dir/$tag/clients.out" 2>&1 &
  local clients=$!
  pids+=("$clients")
  exec {hold}>"$dir/$tag/clients.in"
  for _ in $(seq 1200); do grep -q ready "$dir/$tag/clients.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "ready $STREAMS" "$dir/$tag/clients.out" || { echo "$tag: streams not open: $(tail -2 "$dir/$tag/clients.out")"; exit 1; }
  sleep "$SETTLE"
  after=$(rss_kb "$pid")
  exec {hold}>&-
  wait "$clients" 2>/dev/null || true
  kill "$pp"; wait "$pp" 2>/dev/null || true
  local per=$(( (after - before) * 1024 / STREAMS ))
  eval "rps_$tag=$rps per_$tag=$per"
  local line="pushpin_m2 server=$tag rps=$rps non2xx=$non2xx socket_errors=$errors duration_s=$DURATION conns=$CONNS streams=$STREAMS rss_before_kb=$before rss_streams_kb=$after bytes_per_stream=$per"
  echo "$line"
  [ -z "$results" ] || echo "$line" >>"$results"
}

measure zring "$dir/bin/mongrel2"
measure mongrel2 "$(command -v mongrel2)"
line=$(awk -v a="$rps_zring" -v b="$rps_mongrel2" -v c="$per_zring" -v d="$per_mongrel2" \
  'BEGIN { printf "pushpin_m2 ratios rps_zring_over_mongrel2=%.2f bytes_per_stream_mongrel2_over_zring=%s", a / b, (c > 0 ? sprintf("%.1f", d / c) : "inf") }')
echo "$line"
[ -z "$results" ] || echo "$line" >>"$results"
