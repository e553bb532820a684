"""Seed 000's dropout series C-18..C-21 (thesis section 4.2.7): C-14 (AdamW, weight decay 0.2) with the
dropout before the classifier at 0.1, 0.3, 0.4 and 0.5 instead of 0.2, on Stanford Cars from scratch.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_dropout.py \\
      --workdir=runs/thesis_dropout --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-14 reached 68.50% (4.2.6).
"""
CONFIG = 'configs/ghostnet_cars.py:c14'  # C-14: C-7 with AdamW, weight decay 0.2 (4.2.6)


def get_sweep():
  return [{'model.dropout': dropout, 'name': name}
          for name, dropout in [('C-18', 0.1),   # 66.90%
                                ('C-19', 0.3),   # 67.81%
                                ('C-20', 0.4),   # 64.88%
                                ('C-21', 0.5)]]  # 66.75%
