"""Seed 000's controlled learning-rate scheduling series C-30..C-33 (thesis section 4.2.10): C-27's setup
with PyTorch's MultiStepLR (x0.1 at each milestone) dropping the rate earlier than ReduceLROnPlateau did in
C-27 (epochs 61, 82, 93, 104). All four dropped it too early.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_milestones_early.py \\
      --workdir=runs/thesis_milestones_early --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-27 reached 76.20% (4.2.9).
"""
CONFIG = 'configs/ghostnet_cars.py:c22'  # C-22: C-14 with a head of 320 (4.2.8)


def get_sweep():
  return [{'schedule.name': 'multistep', 'schedule.gamma': 0.1, 'schedule.milestones_epochs': epochs, 'name': name}
          for name, epochs in [('C-30', (28, 48, 68, 88)),    # 57.82%
                               ('C-31', (36, 56, 76, 96)),    # 64.93%
                               ('C-32', (44, 64, 84, 104)),   # 68.79%
                               ('C-33', (52, 72, 92, 112))]]  # 71.59%
