#!/usr/bin/env bash
# Trains on a Cloud TPU VM with gcloud: one host (v5litepod-8, v4-8, ...) or a pod slice of several, every
# worker running the same command (python -m lightcls.main; jax.distributed joins them).
#   launch/tpu_vm.sh create                 create the TPU VM (SPOT=1: a Spot VM, cheaper, may be preempted)
#   launch/tpu_vm.sh copy [DATA_DIR]        this checkout (and a dataset folder, to ~/data/) onto every worker,
#                                           then a Python 3.11 venv with lightcls and jax[tpu] in ~/venv
#   launch/tpu_vm.sh mount                  the bucket $BUCKET at $RUNS on every worker (gcsfuse): a pod slice's
#                                           workers must all see its --workdir (checkpoints are written by all)
#   launch/tpu_vm.sh run ARGS...            python -m lightcls.main ARGS on every worker, in the background
#                                           (it outlives this terminal; logs in ~/lightcls.log on each worker)
#   launch/tpu_vm.sh logs [WORKER]          follow a worker's log (default 0)
#   launch/tpu_vm.sh stop                   SIGTERM to the run on every worker: it saves a checkpoint and exits;
#                                           `run` with the same ARGS resumes
#   launch/tpu_vm.sh tensorboard LOGDIR     TensorBoard on worker 0 (LOGDIR from ~/lightcls), forwarded to
#                                           http://localhost:$TB_PORT
#   launch/tpu_vm.sh delete                 delete the TPU VM
# e.g. launch/tpu_vm.sh copy ~/data/stanford_cars && launch/tpu_vm.sh run --config=configs/ghostnet_cars.py \
#        --config.data.data_dir=../data/stanford_cars --workdir=runs/ghostnet_cars     (paths from ~/lightcls)
set -euo pipefail

# Settings, each overridable from the environment:
TPU_NAME=${TPU_NAME:-lightcls}
ZONE=${ZONE:-us-west4-a}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-8}
TPU_VERSION=${TPU_VERSION:-v2-alpha-tpuv5-lite}    # the TPU software version (runtime image) for the accelerator
PROJECT=${PROJECT:-}                                # empty: gcloud's configured project
SPOT=${SPOT:-0}
BUCKET=${BUCKET:-}                                  # mount: a gs:// bucket name (without gs://)
RUNS=${RUNS:-/mnt/lightcls-runs}                    # mount: where every worker sees it
TB_PORT=${TB_PORT:-6006}

usage() {  # the comment above, up to its first blank line
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0" >&2
  exit 2
}

tpu() {  # gcloud compute tpus tpu-vm SUBCOMMAND with the zone and project, then the rest
  local subcommand=$1
  shift
  gcloud compute tpus tpu-vm "$subcommand" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} "$@"
}

on_all() {  # a bash command on every worker at once
  tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

quoted() {  # the arguments as one string the remote shell splits back into them
  printf '%q ' "$@"
}

create() {
  local spot=()
  if [ "$SPOT" = 1 ]; then spot=(--spot); fi
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$TPU_VERSION" "${spot[@]}"
}

copy() {
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  temporary=$(mktemp -d)
  trap 'rm -rf "$temporary"' EXIT
  tar -czf "$temporary/lightcls.tar.gz" -C "$repo" --exclude=.git --exclude=.venv --exclude=runs \
    --exclude=test-artifacts --exclude=__pycache__ --exclude='*.egg-info' .
  tpu scp "$temporary/lightcls.tar.gz" "$TPU_NAME:lightcls.tar.gz" --worker=all
  if [ $# -ge 1 ]; then
    on_all 'mkdir -p ~/data'
    tpu scp --recurse "$1" "$TPU_NAME:data/" --worker=all
  fi
  # TPU VM images ship Python 3.10; lightcls needs 3.11. tensorflow-cpu (the [tf] extra) keeps TensorFlow off
  # the TPU that JAX holds (see launch/colab_tpu.ipynb).
  on_all 'set -e
    rm -rf ~/lightcls && mkdir ~/lightcls && tar -xzf ~/lightcls.tar.gz -C ~/lightcls
    if ! command -v python3.11 > /dev/null; then
      sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv
    fi
    [ -d ~/venv ] || python3.11 -m venv ~/venv
    ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q -e ~/lightcls"[tf]" "jax[tpu]"
    ~/venv/bin/python -c "import jax; print(jax.process_index(), jax.local_devices())"'
}

mount() {
  [ -n "$BUCKET" ] || { echo 'tpu_vm.sh mount: set BUCKET to a gs:// bucket name' >&2; exit 2; }
  # gcsfuse from Google's apt repository (https://cloud.google.com/storage/docs/gcsfuse-install).
  local apt=https://packages.cloud.google.com/apt key=/usr/share/keyrings/cloud.google.asc
  on_all "set -e
    if ! command -v gcsfuse > /dev/null; then
      echo \"deb [signed-by=$key] $apt gcsfuse-\$(lsb_release -cs) main\" \\
        | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      curl -fsSL $apt/doc/apt-key.gpg | sudo tee $key > /dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi
    sudo mkdir -p $(quoted "$RUNS") && sudo chown \$USER $(quoted "$RUNS")
    mountpoint -q $(quoted "$RUNS") || gcsfuse --implicit-dirs $(quoted "$BUCKET" "$RUNS")"
}

run() {
  [ $# -ge 1 ] || usage
  # initialize=always: a TPU VM keeps its workers' addresses in its metadata, which JAX reads (for one host,
  # a cluster of one).
  on_all "cd ~/lightcls && nohup ~/venv/bin/python -m lightcls.main $(quoted "$@") \
    --config.distributed.initialize=always > ~/lightcls.log 2>&1 < /dev/null & echo \$! > ~/lightcls.pid"
  echo "Started on every worker of $TPU_NAME. Follow it: launch/tpu_vm.sh logs; stop it: launch/tpu_vm.sh stop"
}

logs() {
  tpu ssh "$TPU_NAME" --worker="${1:-0}" --command='tail -n 100 -F ~/lightcls.log'
}

stop() {
  # shellcheck disable=SC2016  # (expanded on each worker)
  on_all '[ -f ~/lightcls.pid ] && kill -TERM "$(cat ~/lightcls.pid)" 2> /dev/null || echo "no run on $(hostname)"'
}

tensorboard() {
  [ $# -eq 1 ] || usage
  echo "TensorBoard: http://localhost:$TB_PORT (Ctrl-C ends it)"
  tpu ssh "$TPU_NAME" --worker=0 \
    --command="cd \$HOME/lightcls && \$HOME/venv/bin/tensorboard --logdir $(quoted "$1") --port $TB_PORT" \
    -- -L "$TB_PORT:localhost:$TB_PORT"
}

delete() {
  tpu delete "$TPU_NAME" --quiet
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  create|delete|stop) [ $# -eq 0 ] || usage; "$command" ;;
  copy) [ $# -le 1 ] || usage; copy "$@" ;;
  mount) [ $# -eq 0 ] || usage; mount ;;
  run|logs|tensorboard) "$command" "$@" ;;
  -h|--help|help) usage ;;
  *) echo "tpu_vm.sh: unknown command '$command'" >&2; usage ;;
esac
