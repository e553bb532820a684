"""Seed 000's weight-decay series C-13..C-17 (thesis section 4.2.6): C-7 with Adam replaced by AdamW, weight
decay 0.1 to 0.5, on Stanford Cars from scratch.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_weight_decay.py \\
      --workdir=runs/thesis_weight_decay --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-7 reached 54.28% (4.2.3).
"""
CONFIG = 'configs/ghostnet_cars.py'  # C-50, the thesis' final recipe; C7 below undoes its later steps

C7 = {  # C-7, the best of 4.2.3: hflip + affine + colour jitter, normalised, label smoothing, dropout 0.2
    'optimizer.name': 'adam', 'optimizer.weight_decay': 0.0,  # Adam until 4.2.6 (section 4's assumptions)
    'model.head_features': 1280,  # the thesis head at GhostNet's 1280 until 4.2.8 (C-14: 4,153,090 params)
    'schedule.name': 'constant',  # no learning-rate scheduler until 4.2.9
    'export.formats': (),         # search runs; export the chosen one with python -m lightcls.export
}


def get_sweep():
  return [{**C7, 'optimizer.name': 'adamw', 'optimizer.weight_decay': wd, 'name': name}
          for name, wd in [('C-13', 0.1),   # 63.39%
                           ('C-14', 0.2),   # 68.50%
                           ('C-15', 0.3),   # 61.84%
                           ('C-16', 0.4),   # 65.14%
                           ('C-17', 0.5)]]  # 59.95%
