"""Seed 000's bounding-box series C-10, C-11 (thesis section 4.2.5): C-7 with the training images cut to
their car's bounding box (C-10), or the box kept in place on a white image (C-11). Both failed: the training
images no longer looked like the uncropped validation photos.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_boxes.py \\
      --workdir=runs/thesis_boxes --config.data.data_dir=$HOME/data/stanford_cars

The thesis' validation top-1 after each run's comment; its baseline C-7 reached 54.28% (4.2.3).
"""
CONFIG = 'configs/ghostnet_cars.py:c7'  # C-7, the best of 4.2.3 (configs/ghostnet_cars.py)


def get_sweep():
  return [{'data.crop_to_boxes': True, 'name': 'C-10'},                                   # 3.91%
          {'data.crop_to_boxes': True, 'data.erase_background': True, 'name': 'C-11'}]  # 3.07%
