"""Seed 000's weight-decay series C-13..C-17 (thesis section 4.2.6): C-7 with Adam replaced by AdamW, weight
decay 0.1 to 0.5, on Stanford Cars from scratch.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_weight_decay.py \\
      --workdir=runs/thesis_weight_decay --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-7 reached 54.28% (4.2.3).
"""
CONFIG = 'configs/ghostnet_cars.py:c7'  # C-7, the best of 4.2.3 (configs/ghostnet_cars.py)


def get_sweep():
  return [{'optimizer.name': 'adamw', 'optimizer.weight_decay': wd, 'name': name}
          for name, wd in [('C-13', 0.1),   # 63.39%
                           ('C-14', 0.2),   # 68.50%
                           ('C-15', 0.3),   # 61.84%
                           ('C-16', 0.4),   # 65.14%
                           ('C-17', 0.5)]]  # 59.95%
