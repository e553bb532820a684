"""Seed 000's last-layer-size series C-22..C-25 (thesis section 4.2.8): C-14 with the head's width
(`out_channels`, here model.head_features) at 320, 640, 960 and 1600 instead of 1280, on Stanford Cars.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_head_width.py \\
      --workdir=runs/thesis_head_width --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 and parameter count after each run's comment; its baseline C-14 (1280) reached
68.50% with 4,153,090 parameters (the thesis prints each count 2 lower than its code logs: REFERENCE.md).
"""
CONFIG = 'configs/ghostnet_cars.py:c14'  # C-14: C-7 with AdamW, weight decay 0.2 (4.2.6)


def get_sweep():
  return [{'model.head_features': width, 'name': name}
          for name, width in [('C-22', 320),    # 68.93%, 3,041,410 parameters
                              ('C-23', 640),    # 63.13%, 3,411,970
                              ('C-24', 960),    # 64.96%, 3,782,530
                              ('C-25', 1600)]]  # 63.11%, 4,523,650
