#!/usr/bin/env bash
# TLS handshake rate and throughput, side by side in one run: zring (io_uring), zring (epoll),
# nginx (Debian's, OpenSSL) and Condure 1.9.1, each serving https://localhost:PORT/hello on
# loopback with the same certificate, for an ECDSA P-256 and an RSA 2048 certificate made by
# openssl for this run. zring and Condure answer through the example handler; nginx answers
# `return 200` itself (its best case: no upstream). nginx runs in the foreground with its own
# temporary config, prefix, pid and logs (TLS 1.3 only, X25519), started and stopped here.
#
# For each certificate and server:
#   full (wrk):      wrk -t$THREADS -c$CONNS -d$SECS -H 'Connection: close' https://.../hello
#                    every request a new connection and a full handshake (OpenSSL client)
#   full (rustls):   zring-tls-rate --conns $CONNS_RATE --secs $SECS: the same with rustls'
#                    client, TLS 1.3 and X25519 only, resumption disabled
#   resumed:         zring-tls-rate --resume: each connection resumes with the ticket the
#                    previous one got (wrk cannot resume); the count of resumed handshakes
#                    is checked, a server that does not resume shows resumed=0
#   keep-alive:      wrk -t$THREADS -c$CONNS -d$SECS https://.../hello
# and the CPU time (user + system; nginx: master and workers) the server spent per
# connection (per request for keep-alive), from /proc. The client shares the 2 cores and does
# the client half of every handshake, so rates are capped by the client as much as by the
# server; CPU per handshake is the server's own cost. The negotiated version, suite and group
# are printed once per server. Ends with one key=value line (test=bench-tls).
#
# Env: THREADS=2 CONNS=64 (wrk), CONNS_RATE=16 (zring-tls-rate threads), SECS=10, WORKERS=2
# (zring workers, nginx worker_processes; Condure's own default), KEYS="ec rsa", PROFILE.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} CONNS=${CONNS:-64} CONNS_RATE=${CONNS_RATE:-16} SECS=${SECS:-10} WORKERS=${WORKERS:-2}
KEYS=${KEYS:-ec rsa} PROFILE=${PROFILE:-release}
for tool in wrk condure openssl nginx curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required (scripts/setup.sh test)"; exit 1; }
done
if [ "$PROFILE" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
BIN=target/$PROFILE
dir=$(mktemp -d /tmp/zring-bench-tls.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { # as load-lib.sh's, without its sysctls and traps
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    awk -v port="$(printf '%04X' "$p")" '$4 == "0A" { split($2, a, ":"); if (a[2] == port) found = 1 }
      END { exit found ? 0 : 1 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

hz=$(getconf CLK_TCK)
# CPU ticks of a process and its children (nginx's workers are children of its master).
cpu_ticks() {
  local p t=0 v
  for p in "$1" $(pgrep -P "$1" || true); do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$(( t + v ))
  done
  echo "$t"
}

# make_cert ec|rsa: a throwaway CA ($dir/ca-KEY/ca.crt, what clients trust) and a leaf for
# localhost signed by it ($dir/ids-KEY/localhost.{crt,key}, what servers present), both with
# keys of that kind (a self-signed certificate is a CA, which rustls' client refuses as a
# server's end-entity certificate).
make_cert() {
  local newkey ca="$dir/ca-$1" ids="$dir/ids-$1"
  case "$1" in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) echo "KEYS: ec and/or rsa" >&2; exit 2 ;;
  esac
  mkdir -p "$ca" "$ids"
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=zring-bench-ca -keyout "$ca/ca.key" -out "$ca/ca.crt" 2>/dev/null
  openssl req "${newkey[@]}" -nodes -subj /CN=localhost -keyout "$ids/localhost.key" -out "$ca/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n' >"$ca/leaf.ext"
  openssl x509 -req -in "$ca/leaf.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial -days 2 \
    -extfile "$ca/leaf.ext" -out "$ids/localhost.crt" 2>/dev/null
}

nginx_conf() { # ids port → $dir/nginx/nginx.conf
  local d="$dir/nginx"
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes $WORKERS;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2 ssl;
    server_name localhost;
    ssl_certificate $1/localhost.crt;
    ssl_certificate_key $1/localhost.key;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve X25519;
    ssl_session_tickets on;
    location / { return 200 "hello\n"; }
  }
}
CONF
}

wait_ok() { # port ca-dir
  for _ in $(seq 100); do
    curl -sf --cacert "$2/ca.crt" --resolve "localhost:$1:127.0.0.1" "https://localhost:$1/hello" >/dev/null && return 0
    sleep 0.1
  done
  echo "no answer on $1" >&2
  return 1
}

pick() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }

# wrk_run pid url [header...] → "req/s requests cpu_us_per_request"
wrk_run() {
  local pid=$1 url=$2 t0 t1 out rate n; shift 2
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" "$@" "$url")
  t1=$(cpu_ticks "$pid")
  rate=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out"); n=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "${rate:-0} ${n:-0} $(( n > 0 ? (t1 - t0) * 1000000 / hz / n : 0 ))"
}

# rate_run pid port ca.crt [--resume] → "handshakes/s resumed cpu_us_per_handshake negotiated"
rate_run() {
  local pid=$1 port=$2 ca=$3 t0 t1 line n; shift 3
  t0=$(cpu_ticks "$pid")
  line=$("$BIN/zring-tls-rate" --target "127.0.0.1:$port" --ca "$ca" --conns "$CONNS_RATE" \
    --secs "$SECS" "$@" 2>>"$dir/rate.err" || true)
  t1=$(cpu_ticks "$pid")
  n=$(pick handshakes "$line")
  echo "$(pick handshakes_per_s "$line") $(pick resumed "$line") $(( ${n:-0} > 0 ? (t1 - t0) * 1000000 / hz / n : 0 ))" \
    "$(pick version "$line")/$(pick suite "$line")/$(pick group "$line")"
}

# measure key name port pid: prints the server's row and appends its key=value fields.
kv="test=bench-tls threads=$THREADS conns=$CONNS conns_rate=$CONNS_RATE secs=$SECS workers=$WORKERS"
declare -A fig
measure() {
  local key=$1 name=$2 port=$3 pid=$4 url fw fr rr ka neg ca="$dir/ca-$1/ca.crt"
  url="https://127.0.0.1:$port/hello"
  read -r -a fw < <(wrk_run "$pid" "$url" -H 'Connection: close')
  # Condure 1.9.1 offers no TLS 1.3: the rustls client allows TLS 1.2 for it, and P-256
  # among its groups (TLS 1.2 needs the ECDSA certificate's curve there, RFC 8422; X25519 is
  # still what is negotiated: the negotiated column).
  local v=()
  [ "$name" != condure ] || v=(--allow-tls12 --allow-p256)
  read -r -a fr < <(rate_run "$pid" "$port" "$ca" "${v[@]}")
  read -r -a rr < <(rate_run "$pid" "$port" "$ca" --resume "${v[@]}")
  read -r -a ka < <(wrk_run "$pid" "$url")
  neg=${fr[3]:-na}
  printf '%-15s %11s %11s %13s %9s %11s %12s %12s %12s  %s\n' "$name" "${fw[0]}" "${fr[0]}" "${rr[0]}" "${rr[1]:-0}" \
    "${ka[0]}" "${fw[2]}" "${fr[2]}" "${rr[2]}" "$neg"
  fig[$key.$name.full]=${fw[0]} fig[$key.$name.full_rustls]=${fr[0]} fig[$key.$name.resumed]=${rr[0]}
  fig[$key.$name.cpu_full]=${fw[2]} fig[$key.$name.cpu_resumed]=${rr[2]}
  kv+=" ${key}_${name}_full_hs_per_s=${fw[0]} ${key}_${name}_full_rustls_hs_per_s=${fr[0]}"
  kv+=" ${key}_${name}_resumed_hs_per_s=${rr[0]} ${key}_${name}_resumed=${rr[1]:-0} ${key}_${name}_keepalive_req_per_s=${ka[0]}"
  kv+=" ${key}_${name}_cpu_us_full=${fw[2]} ${key}_${name}_cpu_us_full_rustls=${fr[2]} ${key}_${name}_cpu_us_resumed=${rr[2]}"
  kv+=" ${key}_${name}_cpu_us_keepalive_req=${ka[2]} ${key}_${name}_negotiated=${neg}"
}

# serve key name: starts one server (and the example handler where it needs one), measures
# it, stops it.
serve() {
  local key=$1 name=$2 ids="$dir/ids-$1" port pid h=
  port=$(free_port)
  local z=(--workers "$WORKERS" --listen "127.0.0.1:$port,tls,default-cert=localhost" --tls-identities-dir "$ids"
    --zclient-stream "ipc://$dir/$name")
  case "$name" in
    zring_uring) "$BIN/zring" --runtime uring "${z[@]}" >"$dir/$name.log" 2>&1 & ;;
    zring_epoll) "$BIN/zring" --runtime epoll "${z[@]}" >"$dir/$name.log" 2>&1 & ;;
    condure) condure --listen "127.0.0.1:$port,tls,default-cert=localhost" --tls-identities-dir "$ids" \
      --zclient-stream "ipc://$dir/$name" >"$dir/$name.log" 2>&1 & ;;
    nginx) nginx_conf "$ids" "$port"; nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" \
      >"$dir/$name.log" 2>&1 & ;;
  esac
  pid=$!
  pids+=("$pid")
  if [ "$name" != nginx ]; then
    "$BIN/zring-example-handler" --stream "ipc://$dir/$name" >/dev/null 2>&1 &
    h=$!
    pids+=("$h")
  fi
  wait_ok "$port" "$dir/ca-$key"
  measure "$key" "$name" "$port" "$pid"
  kill "$pid" ${h:+"$h"} 2>/dev/null || true
  wait "$pid" ${h:+"$h"} 2>/dev/null || true
}

servers=(zring_uring zring_epoll nginx condure)
for key in $KEYS; do
  make_cert "$key"
  case "$key" in ec) what="ECDSA P-256" ;; rsa) what="RSA 2048" ;; esac
  printf '\n%s certificate, TLS 1.3, X25519; %s s per figure; %s workers; box load %s\n' "$what" "$SECS" "$WORKERS" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-15s %11s %11s %13s %9s %11s %12s %12s %12s  %s\n' "" "full hs/s" "full hs/s" "resumed hs/s" "resumed" \
    "keep-alive" "CPU us/full" "CPU us/full" "CPU us/resum" "negotiated (rustls client)"
  printf '%-15s %11s %11s %13s %9s %11s %12s %12s %12s\n' "" "(wrk)" "(rustls)" "(rustls)" "count" "req/s" \
    "(wrk)" "(rustls)" "(rustls)"
  for s in "${servers[@]}"; do serve "$key" "$s"; done
  for z in zring_uring zring_epoll; do
    for o in nginx condure; do
      r=$(awk -v a="${fig[$key.$z.full]}" -v b="${fig[$key.$o.full]}" -v c="${fig[$key.$z.full_rustls]}" \
        -v d="${fig[$key.$o.full_rustls]}" -v e="${fig[$key.$z.resumed]}" -v f="${fig[$key.$o.resumed]}" \
        -v g="${fig[$key.$z.cpu_full]}" -v h="${fig[$key.$o.cpu_full]}" -v i="${fig[$key.$z.cpu_resumed]}" \
        -v j="${fig[$key.$o.cpu_resumed]}" \
        'function q(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "na" }
         BEGIN { print q(a, b), q(c, d), q(e, f), q(h, g), q(j, i) }')
      read -r r1 r2 r3 r4 r5 <<<"$r"
      printf 'ratio %s/%s: full %sx (wrk), %sx (rustls), resumed %sx; CPU per handshake %s/%s: full %sx, resumed %sx\n' \
        "$z" "$o" "$r1" "$r2" "$r3" "$o" "$z" "$r4" "$r5"
      kv+=" ${key}_ratio_${z}_${o}_full=$r1 ${key}_ratio_${z}_${o}_full_rustls=$r2 ${key}_ratio_${z}_${o}_resumed=$r3"
      kv+=" ${key}_cpu_ratio_${o}_${z}_full=$r4 ${key}_cpu_ratio_${o}_${z}_resumed=$r5"
    done
  done
done
[ -s "$dir/rate.err" ] && { echo; sort "$dir/rate.err" | uniq -c | head -n 8; }
echo
echo "$kv load=$(cut -d' ' -f1 /proc/loadavg)"
