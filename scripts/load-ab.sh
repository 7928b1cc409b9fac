#!/usr/bin/env bash
# Two or more zring-load binaries (or one with and without a busy process beside it),
# alternately in one run, so a change to zring-load, or to the box, is judged side by side
# on this noisy, shared machine.
#
#   scripts/load-ab.sh [--clients N[,N...]] [--rounds K] [--reps R] [--fanout] [--extra "ARGS"]
#                      NAME=BINARY[+hog]...
#
# Without --fanout: the floor alone (`zring-load --mode floor`: N loopback pairs of its own,
# the same frame written to every server side and timed by its clients); no server runs.
# With --fanout: zring (release, --workers 2, io_uring) and the example handler are started
# once, and each binary runs what scripts/fanout.sh runs against them (the floor first, its
# pairs closed, then N WebSocket clients and K broadcasts).
#
# For every client count, R repetitions, each running every binary once in the given order
# (the next repetition in reverse order, so none always goes first). One key=value line per
# run: the load average at its start, zring-load's own CPU seconds (user + system, the whole
# run: connects and rounds; `cpu_s`) and the CPU seconds the rest of the box used meanwhile
# (`others_cpu_s`: /proc/stat busy time minus ours, so other processes, zring and the
# handler with --fanout, and softirq time the kernel charged to no process), then the
# floor's (and fan-out's) figures. NAME=BINARY+hog runs BINARY beside one CPU-bound process
# started here (a `sh` busy loop, ended by its pid): what one other busy process does to the
# figures on this 2-core box.
# Sets sysctls for the run (scripts/load-lib.sh) and restores them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=50000,100000 ROUNDS=5 REPS=2 EXTRA= FANOUT=
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --fanout) FANOUT=1; shift ;;
    --extra) EXTRA=$2; shift 2 ;;
    *=*) bins+=("$1"); shift ;;
    *) echo "usage: $0 [--clients N[,N...]] [--rounds K] [--reps R] [--fanout] [--extra ARGS] NAME=BINARY[+hog]..." >&2; exit 2 ;;
  esac
done
[ ${#bins[@]} -ge 1 ] || { echo "$0: give NAME=BINARY at least once" >&2; exit 2; }
# shellcheck source=scripts/load-lib.sh
source scripts/load-lib.sh
load_sysctls
if [ -n "$FANOUT" ]; then
  load_build
  PORT=$(free_port)
  max=0; for n in ${CLIENTS//,/ }; do [ "$n" -gt "$max" ] && max=$n; done
  start_server zring "$PORT" "$max"
fi
# Busy CPU seconds of the whole box so far (user nice system irq softirq steal).
box_busy() { awk '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat; }
keys=(floor_p50_ms floor_p99_ms floor_p100_ms floor_p100_median_ms floor_p100_rounds_ms floor_missed floor_backlog_drops)
[ -n "$FANOUT" ] && keys+=(fanout_p50_ms fanout_p99_ms fanout_p100_ms fanout_p100_median_ms fanout_p100_rounds_ms fanout_missed
  ratio_p100 ratio_p100_median connect_secs)
keys+=(status)
for n in ${CLIENTS//,/ }; do
  for rep in $(seq "$REPS"); do
    order=("${bins[@]}")
    if [ $(( rep % 2 )) = 0 ]; then
      order=(); for (( i=${#bins[@]}-1; i>=0; i-- )); do order+=("${bins[$i]}"); done
    fi
    for nb in "${order[@]}"; do
      name=${nb%%=*} bin=${nb#*=} hog=
      case "$bin" in *+hog) bin=${bin%+hog} hog=1 ;; esac
      if [ -n "$FANOUT" ]; then
        args=(--mode ws --clients "$n" --members "$n" --rate 20000 --target "127.0.0.1:$PORT" --path /ws/broadcast
          --fanout-trigger "http://127.0.0.1:$PORT/broadcast" --rounds "$ROUNDS" --payload 64 --floor-first
          --label zring --max-secs $(( n / 150 + ROUNDS * 25 + 120 )) --connect-timeout 60 --inflight 128)
      else
        args=(--mode floor --clients "$n" --rounds "$ROUNDS" --max-secs $(( n / 200 + ROUNDS * 25 + 120 ))
          --connect-timeout 60 --inflight 128)
      fi
      if [ -n "$hog" ]; then
        sh -c 'while :; do :; done' &
        hog_pid=$!
        LOAD_PIDS+=("$hog_pid")
      fi
      load=$(cut -d' ' -f1 /proc/loadavg)
      busy0=$(box_busy)
      set +e
      # shellcheck disable=SC2086
      line=$(/usr/bin/time -f '%U %S' -o "$LOAD_DIR/time" "$bin" "${args[@]}" $EXTRA 2>"$LOAD_DIR/$name.err")
      rc=$?
      set -e
      busy1=$(box_busy)
      if [ -n "$hog" ]; then
        kill "$hog_pid"; wait "$hog_pid" 2>/dev/null || true
        keep=(); for p in "${LOAD_PIDS[@]}"; do [ "$p" = "$hog_pid" ] || keep+=("$p"); done; LOAD_PIDS=("${keep[@]}")
      fi
      ours=$(awk 'END { printf "%.2f", $1 + $2 }' "$LOAD_DIR/time")
      others=$(awk -v a="$busy0" -v b="$busy1" -v o="$ours" 'BEGIN { printf "%.2f", b - a - o }')
      out="test=load-ab name=$name clients=$n rep=$rep hog=${hog:-0} loadavg=$load cpu_s=$ours others_cpu_s=$others"
      for k in "${keys[@]}"; do v=$(pick "$k" "$line"); out+=" $k=${v:-na}"; done
      echo "$out exit=$rc"
      [ "$rc" = 0 ] || tail -n 3 "$LOAD_DIR/$name.err" >&2
      # The closes (ours, and the server's sessions) settle before the next run.
      sleep 3
    done
  done
done
[ -z "$FANOUT" ] || echo "test=load-ab server_state=$(server_state zring)"
