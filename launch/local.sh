#!/usr/bin/env bash
# Trains on this machine: python -m lightcls.main with tcmalloc preloaded when it is installed
# (Debian/Ubuntu: apt-get install libtcmalloc-minimal4). XLA:CPU maps and unmaps its large buffers on every
# step with glibc malloc; tcmalloc keeps them. See experiments/RESULTS.md for the measured effect.
#   launch/local.sh --config=configs/quickstart.py --workdir=runs/quickstart [--config.a.b=v ...]
set -euo pipefail
for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
  if [ -e "$lib" ]; then
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    break
  fi
done
exec python -m lightcls.main "$@"
