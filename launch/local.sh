#!/usr/bin/env bash
# Trains on this machine: python -m lightcls.main with tcmalloc preloaded when it is installed
# (Debian/Ubuntu: apt-get install libtcmalloc-minimal4). Without it lightcls makes glibc's malloc keep
# XLA:CPU's step buffers (cli.keep_freed_host_memory); tcmalloc is faster still (MobileNetV3-Large 224x32:
# 0.94 s a step against 1.10 s) and holds more memory. See experiments/RESULTS.md, "CPU speed".
#   launch/local.sh --config=configs/quickstart.py --workdir=runs/quickstart [--config.a.b=v ...]
set -euo pipefail
for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
  if [ -e "$lib" ]; then
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    break
  fi
done
exec python -m lightcls.main "$@"
