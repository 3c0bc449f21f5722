#!/usr/bin/env bash
# Runs N processes of main.py on this machine as one multi-process JAX run on CPU, the way a
# pod runs one process per host: a local stand-in for testing multi-host code.
#
#   ./scripts/launch_local.sh 2 --config=configs/pretrain_digits.py:runlocal --workdir=/tmp/mp
#
# Each process gets LOCAL_DEVICES (default 4) fake CPU devices. Process i's output goes to
# LOG_DIR/process_i.log (LOG_DIR: a new temporary directory unless set); process 0's is also
# shown here. If one process fails (or on Ctrl-C) the others are stopped; the exit status is
# non-zero if any process failed.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [main.py flags...]" >&2
  exit 2
fi
num_processes=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python=$repo/.venv/bin/python
[[ -x $python ]] || python=python3
log_dir=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mmjax_launch.XXXXXX")}
mkdir -p "$log_dir"
# A port that is free now (the coordinator binds it a moment later).
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

export JAX_PLATFORMS=cpu
other_xla_flags=$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g' <<<"${XLA_FLAGS:-}")
export XLA_FLAGS="$other_xla_flags --xla_force_host_platform_device_count=${LOCAL_DEVICES:-4}"
echo "Launching $num_processes processes (coordinator 127.0.0.1:$port); logs in $log_dir" >&2

pids=()
# JAX's distributed runtime catches SIGTERM (as a preemption notice) and keeps running, so
# whatever has not exited a few seconds after it gets SIGKILL.
stop_all() {
  kill "${pids[@]}" 2>/dev/null || true
  sleep 3
  kill -9 "${pids[@]}" 2>/dev/null || true
}
trap 'stop_all; kill ${tail_pid:-} 2>/dev/null || true; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  : >"$log_dir/process_$i.log"
  "$python" "$repo/main.py" "$@" --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f "$log_dir/process_0.log" &
tail_pid=$!

# Poll until every process has exited; the first failure stops the rest.
status=0
running=("${pids[@]}")
while ((${#running[@]})); do
  sleep 1
  still_running=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still_running+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      status=$code
      echo "A process failed (exit status $code); stopping the others. Logs: $log_dir" >&2
      stop_all
    fi
  done
  running=("${still_running[@]+"${still_running[@]}"}")
done
sleep 0.2  # Let tail print the last lines.
kill "$tail_pid" 2>/dev/null || true
exit "$status"
