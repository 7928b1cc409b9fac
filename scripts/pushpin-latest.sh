#!/usr/bin/env bash
# The newest Pushpin (2.0-dev, fastly/pushpin main) with zring as its only connection manager.
#
#   scripts/pushpin-latest.sh PUSHPIN_SRC
#
# PUSHPIN_SRC is a git checkout or a bare clone of fastly/pushpin. Its HEAD commit is built
# once (`cargo build --release --locked`, 10-20+ minutes here) into
# target/pushpin-latest/<commit>/ and reused by later runs. Then Pushpin's own runner
# (`pushpin`) runs with its default `services=connmgr,proxy,handler` from a work directory
# where it finds no build tree, so it takes `pushpin-connmgr` from PATH: a wrapper that
# execs zring with the flags it was given (plus ZRING_ARGS, e.g. `--runtime epoll`). The
# checks, through Pushpin's HTTP port, against a local origin this script starts
# (scripts/pushpin_latest_peers.py):
#   start   the runner came up with zring as its connmgr (every flag it passes accepted)
#   proxy   GET /plain: 200 and the origin's body
#   stream  a chunked response whose parts reach the client one by one (the origin writes
#           the next part only after the client saw the previous one)
#   ws      a proxied WebSocket echo (text, binary, 70 kB): needs client mode's outbound
#           WebSocket; while zring's --help lists none, a failure is reported as expected
# Prints PASS/FAIL per check and the connmgr's command line; exits 1 if any check failed.
# CI does not run it (it cannot fetch the source); tests/ do not depend on it. KEEP_LOGS=1
# keeps the work directory (Pushpin's logs, zring's) and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
src=$(cd "$1" && pwd)
scripts/setup.sh pushpin-latest

commit=$(git -C "$src" rev-parse HEAD)
cache=$(pwd)/target/pushpin-latest/$commit
build=$cache/src
if [ ! -f "$cache/built" ]; then
  echo "building Pushpin $commit into $cache (log: $cache/build.log)"
  mkdir -p "$build"
  # The committed tree at HEAD: the commit is the cache key, so local edits are not built.
  [ -f "$build/Cargo.toml" ] || git -C "$src" archive HEAD | tar -x -C "$build"
  (cd "$build" && nice -n 10 cargo build --release --locked) >"$cache/build.log" 2>&1 ||
    { tail -30 "$cache/build.log" >&2; echo "Pushpin build failed: $cache/build.log" >&2; exit 1; }
  touch "$cache/built"
fi
rel=$build/target/release
for b in pushpin pushpin-proxy pushpin-handler pushpin-connmgr; do
  [ -x "$rel/$b" ] || { echo "$rel/$b missing: remove $cache/built and run again" >&2; exit 1; }
done
version=$("$rel/pushpin" --version 2>&1 | head -1 || true)

cargo build --release --bin zring -q
zring=$(pwd)/target/release/zring

# shellcheck source=scripts/load-lib.sh
. scripts/load-lib.sh # LOAD_DIR (the work dir), LOAD_PIDS (killed by pid on exit), free_port
work=$LOAD_DIR
[ -n "${KEEP_LOGS:-}" ] && echo "work dir: $work"
mkdir -p "$work/bin" "$work/config" "$work/run" "$work/log"
ln -s "$rel/pushpin-proxy" "$rel/pushpin-handler" "$work/bin/"
# The connmgr Pushpin starts: zring, same pid (exec), its arguments recorded.
cat >"$work/bin/pushpin-connmgr" <<EOF
#!/bin/sh
echo \$\$ >'$work/connmgr.pid'
printf '%s\n' "\$*" >'$work/connmgr.args'
exec '$zring' ${ZRING_ARGS:-} "\$@"
EOF
chmod +x "$work/bin/pushpin-connmgr"

http=$(free_port) origin_http=$(free_port) origin_ws=$(free_port)
push_in=$(free_port) push_sub=$(free_port) publish=$(free_port) command=$(free_port)
# Pushpin's example config with what must differ here: paths in the work dir, its internal
# config from the build tree, and every TCP port moved off the defaults (other Pushpins may
# run on this box). services is left at its default (connmgr,proxy,handler), checked below.
/usr/bin/python3 - "$build/examples/config/pushpin.conf" "$work/config/pushpin.conf" <<PY
import sys
src, dst = sys.argv[1:]
over = {
    ("global", "libdir"): "$build/src",
    ("global", "rundir"): "$work/run",
    ("runner", "http_port"): "127.0.0.1:$http",
    ("runner", "logdir"): "$work/log",
    ("runner", "log_level"): "3",
    ("handler", "push_in_spec"): "tcp://127.0.0.1:$push_in",
    ("handler", "push_in_sub_specs"): "tcp://127.0.0.1:$push_sub",
    ("handler", "push_in_http_port"): "$publish",
    ("handler", "command_spec"): "tcp://127.0.0.1:$command",
}
out, sect, done = [], None, set()
def flush():
    for (s, k), v in over.items():
        if s == sect and (s, k) not in done:
            out.append("%s=%s" % (k, v)); done.add((s, k))
for line in open(src).read().splitlines():
    t = line.strip()
    if t.startswith("[") and t.endswith("]"):
        flush(); sect = t[1:-1]; out.append(line); continue
    k = t.split("=", 1)[0].strip() if "=" in t and not t.startswith("#") else None
    if k and (sect, k) in over:
        out.append("%s=%s" % (k, over[(sect, k)])); done.add((sect, k)); continue
    out.append(line)
flush()
open(dst, "w").write("\n".join(out) + "\n")
PY
services=$(sed -n 's/^services=//p' "$work/config/pushpin.conf")
[ "$services" = "connmgr,proxy,handler" ] || { echo "example config has services=$services" >&2; exit 1; }
cat >"$work/config/routes" <<EOF
*,path_beg=/ws 127.0.0.1:$origin_ws
* 127.0.0.1:$origin_http
EOF

/usr/bin/python3 scripts/pushpin_latest_peers.py origin "$origin_http" "$origin_ws" >"$work/origin.log" 2>&1 &
LOAD_PIDS+=($!)
# In a process group of its own: Pushpin 2.0's runner does not pass SIGTERM on to the
# services it started (it waits for them), so it is stopped as a terminal's Ctrl-C stops it,
# by signalling its group. setsid execs in place (the subshell leads no group), so the
# group's id is the runner's pid; checked below.
(cd "$work" && PATH="$work/bin:$PATH" exec setsid "$rel/pushpin" --config="$work/config/pushpin.conf") \
  >"$work/pushpin.log" 2>&1 &
runner=$!
LOAD_PIDS+=("$runner")

failed=0
result() { # NAME ok|fail|known DETAIL
  case "$2" in
    ok) echo "PASS $1: $3" ;;
    known) echo "FAIL $1 (expected: $4): $3"; failed=1 ;;
    *) echo "FAIL $1: $3"; failed=1 ;;
  esac
}

# start: the wrapper ran and zring is still up once Pushpin answers (bounded: 30 s).
started=
for _ in $(seq 300); do
  if [ -f "$work/connmgr.pid" ] && ! kill -0 "$(cat "$work/connmgr.pid")" 2>/dev/null; then break; fi
  kill -0 "$runner" 2>/dev/null || break
  if curl -s -o /dev/null -m 1 "http://127.0.0.1:$http/plain"; then started=1; break; fi
  sleep 0.1
done
echo "pushpin: $version ($commit)"
echo "connmgr args: $(cat "$work/connmgr.args" 2>/dev/null || echo '(never started)')"
cm_pid=$(cat "$work/connmgr.pid" 2>/dev/null || echo 0)
[ "$cm_pid" -gt 0 ] && LOAD_PIDS+=("$cm_pid")
cm_exe=$(readlink "/proc/$cm_pid/exe" 2>/dev/null || true)
if [ -n "$started" ] && [ "$cm_exe" = "$zring" ]; then
  result start ok "pushpin-connmgr is $zring (pid $cm_pid), services=$services"
else
  why=$(grep -m3 -iE 'unknown|error|invalid|usage' "$work/log/connmgr.log" "$work/pushpin.log" 2>/dev/null | tr '\n' ' ' | cut -c1-300)
  result start fail "connmgr exe=${cm_exe:-none} runner_alive=$(kill -0 "$runner" 2>/dev/null && echo yes || echo no) ${why}"
fi

check() { # NAME: run one client check
  local out
  if out=$(timeout 60 /usr/bin/python3 scripts/pushpin_latest_peers.py check "$1" "$http" "$origin_http" 2>&1); then
    result "$1" ok "$out"
  elif [ "$1" = ws ] && ! "$zring" --help | sed -n '/^OPTIONS (client mode/,/^$/p' | grep -qi websocket; then
    result "$1" known "$out" "zring --help lists no outbound WebSocket for client mode yet"
  else
    result "$1" fail "$out"
  fi
}
check proxy
check stream
check ws

group=$(ps -o pgid= -p "$runner" 2>/dev/null | tr -d ' ' || true)
if [ "$group" = "$runner" ]; then kill -TERM -- "-$group" 2>/dev/null || true; else kill "$runner" 2>/dev/null || true; fi
# zring drains for up to its --shutdown-timeout (10 s) after SIGTERM.
for _ in $(seq 150); do kill -0 "$runner" 2>/dev/null || kill -0 "$cm_pid" 2>/dev/null || break; sleep 0.1; done
if [ "$cm_pid" -gt 0 ] && kill -0 "$cm_pid" 2>/dev/null; then
  result stop fail "zring (pid $cm_pid) still running 15 s after Pushpin was stopped"
fi
if [ "$group" = "$runner" ]; then kill -KILL -- "-$group" 2>/dev/null || true; fi
[ -n "${KEEP_LOGS:-}" ] && echo "logs: $work/log $work/pushpin.log"
if [ "$failed" = 0 ]; then echo "pushpin-latest: all checks passed"; else echo "pushpin-latest: FAILED"; fi
exit "$failed"
