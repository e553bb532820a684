"""Seed 000's automatic learning-rate scheduling series C-26..C-29 (thesis section 4.2.9): C-22 with
PyTorch's ReduceLROnPlateau (x0.1 after 5 epochs without a lower validation loss), four takes of the same
setup to see how much the moment of the drops, and the result, vary between runs. The thesis' takes differed
by their unseeded shuffling; here each take has its own seed.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_plateau.py \\
      --workdir=runs/thesis_plateau --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-22 (no scheduler) reached 68.93% (4.2.8).
"""
CONFIG = 'configs/ghostnet_cars.py:c22'  # C-22: C-14 with a head of 320 (4.2.8)
PLATEAU = {  # the scheduler's parameters in the thesis' config_template.yml (section 3.3)
    'schedule.name': 'plateau', 'schedule.monitor': 'eval/loss', 'schedule.factor': 0.1,
    'schedule.patience': 5, 'schedule.threshold': 1e-3, 'schedule.min_lr': 1e-7,
}


def get_sweep():
  return [{**PLATEAU, 'seed': seed, 'name': name}
          for name, seed in [('C-26', 0),   # 74.60%
                             ('C-27', 1),   # 76.20% (its drops came at epochs 61, 82, 93, 104)
                             ('C-28', 2),   # 75.14%
                             ('C-29', 3)]]  # 74.82%
