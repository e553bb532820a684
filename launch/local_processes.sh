#!/usr/bin/env bash
# Trains one model with N processes on this machine, joined by jax.distributed through a coordinator on
# 127.0.0.1:$JAX_COORDINATOR_PORT: with GPUs, one process per GPU (each sees only its own through
# CUDA_VISIBLE_DEVICES); without, N CPU processes (the multi-host code path, rehearsed on one machine).
# Each process runs launch/local.sh (tcmalloc when installed) and prints its lines prefixed with [its index].
# It waits for all; when one fails it stops the others (SIGTERM, SIGKILL 30 s later: a process waiting on a
# collective with the failed one may never return) and exits with the failed one's status. SIGINT and
# SIGTERM are passed on to every process (each saves a checkpoint and exits; the same command resumes).
#   launch/local_processes.sh N --config=configs/quickstart.py --workdir=runs/two [--config.a.b=v ...]
# Environment: JAX_COORDINATOR_PORT (default 12355), CUDA_VISIBLE_DEVICES (the GPUs to use, in order).
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
n=$1
shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "local_processes.sh: N must be a positive integer, got '$n'" >&2; usage; }
port=${JAX_COORDINATOR_PORT:-12355}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The GPUs to hand out: CUDA_VISIBLE_DEVICES's list when set, else every GPU nvidia-smi lists, else none.
gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  count=$(nvidia-smi -L | grep -c '^GPU')
  for ((g = 0; g < count; g++)); do gpus+=("$g"); done
fi
if [ ${#gpus[@]} -gt 0 ] && [ ${#gpus[@]} -lt "$n" ]; then
  echo "local_processes.sh: $n processes but only ${#gpus[@]} GPU(s) (${gpus[*]}): one process per GPU" >&2
  exit 2
fi

pids=()
status=0
failed_at=
stopped=
signal_all() {
  for pid in "${pids[@]}"; do
    [ -z "$pid" ] || kill -"$1" "$pid" 2> /dev/null || true
  done
}
# Background processes of a script ignore SIGINT: Ctrl-C reaches them as SIGTERM from here.
trap 'stopped=1; signal_all TERM' INT TERM

for ((i = 0; i < n; i++)); do
  (
    if [ ${#gpus[@]} -gt 0 ]; then
      export CUDA_VISIBLE_DEVICES=${gpus[$i]}
    fi
    exec "$here/local.sh" "$@" --config.distributed.coordinator_address="127.0.0.1:$port" \
      --config.distributed.num_processes="$n" --config.distributed.process_id="$i"
  ) > >(while IFS= read -r line; do printf '[%d] %s\n' "$i" "$line"; done) 2>&1 &
  pids+=("$!")
done

# Poll rather than `wait -n`: a trapped signal interrupts `wait`, and the exit status of each process is
# needed to stop the others at the first failure.
running=$n
while [ "$running" -gt 0 ]; do
  running=0
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [ -n "$pid" ] || continue  # finished
    if kill -0 "$pid" 2> /dev/null; then
      running=$((running + 1))
      continue
    fi
    code=0
    wait "$pid" || code=$?
    pids[i]=
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$code
      [ -z "$stopped" ] || continue
      echo "local_processes.sh: process $i exited with status $code; stopping the others" >&2
      signal_all TERM
      failed_at=$SECONDS
    fi
  done
  if [ -n "$failed_at" ] && [ $((SECONDS - failed_at)) -ge 30 ]; then
    signal_all KILL
  fi
  [ "$running" -eq 0 ] || sleep 0.5
done
exit "$status"
