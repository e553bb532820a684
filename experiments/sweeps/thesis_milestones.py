"""Seed 000's learning-rate scheduler adjustment series C-50..C-56 (thesis section 4.2.14): the final recipe
(configs/ghostnet_cars.py: AdamW with weight decay 0.6, dropout 0.2, head 320, MultiStepLR x0.1) with five
sets of milestones around those ReduceLROnPlateau found in C-27 (61, 82, 93, 104). C-50 is the thesis' best
model. The section has no text; the values are those of the table in 4.2 and of 4.1 (C-50's full settings),
and the Neptune table of section 3.4 shows C-51, C-53 and C-55 with C-50's other values.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_milestones.py \\
      --workdir=runs/thesis_milestones --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment.
"""
CONFIG = 'configs/ghostnet_cars.py'


def get_sweep():
  return [{'schedule.milestones_epochs': epochs, 'export.formats': (), 'name': name}  # export the chosen one
          for name, epochs in [('C-50', (67, 82, 95, 107)),   # 83.79%
                               ('C-51', (63, 78, 91, 103)),   # 82.54%
                               ('C-53', (66, 81, 94, 106)),   # 83.02%
                               ('C-55', (68, 83, 96, 108)),   # 83.72%
                               ('C-56', (64, 79, 92, 104))]]  # 82.79%
