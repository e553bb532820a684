"""Seed 000's augmentation series C-4..C-7 (thesis section 4.2.3): C-3 (normalised RGB, label smoothing,
Adam, no augmentation) with four combinations of horizontal flip, affine, random erasing and colour jitter.
C-7 (flip + affine + colour jitter) won and is the baseline of the next steps. The runs are those the
section's text lists; the summary table at the start of 4.2 describes them one row off.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_augmentations.py \\
      --workdir=runs/thesis_augmentations --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-3 reached 11.95% (4.2.2).
"""
CONFIG = 'configs/ghostnet_cars.py:c3'  # C-3: no augmentation (configs/ghostnet_cars.py)


def get_sweep():
  # Erasing last: the thesis applies it to the normalised tensor, after the image augmentations.
  return [{'augment.order': order, 'name': name}
          for name, order in [('C-4', ('hflip', 'affine')),                             # 51.92%
                              ('C-5', ('hflip', 'affine', 'erasing')),                  # 38.08%
                              ('C-6', ('hflip', 'affine', 'color_jitter', 'erasing')),  # 38.68%
                              ('C-7', ('hflip', 'affine', 'color_jitter'))]]            # 54.28%
