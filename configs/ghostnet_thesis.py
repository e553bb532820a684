"""Seed 000's GhostNet variant (thesis head: bias-free linear 960 -> 320, BatchNorm, ReLU; SE width c // 4)
on the digits, in the small-input form for 32 px images.

  python -m lightcls.main --config=configs/ghostnet_thesis.py --workdir=runs/ghostnet_thesis
"""
from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.model.head = 'thesis'
  config.model.head_features = 320   # seed 000's best run (C-50) used out_channels 320
  config.model.small_input = True    # stem and first stride-2 block at stride 1: 4x4 last maps at 32 px
  return config
