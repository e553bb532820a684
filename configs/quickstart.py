"""GhostNet 1.0 on scikit-learn's bundled handwritten digits, upscaled to 32x32: a few minutes on 2 CPU cores.

  python -m lightcls.main --config=configs/quickstart.py --workdir=runs/quickstart
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'digits'
  config.data.image_size = 32
  config.data.mean = (0.3054,)        # of the upscaled training images
  config.data.std = (0.3236,)
  config.augment.order = ('crop',)
  config.augment.crop.padding = 4     # shifts of up to 4 px (one pixel of the original 8x8 digit)
  config.train.batch_size = 64
  config.train.total_epochs = 20.0
  config.optimizer.lr = 2e-3
  config.schedule.milestones_epochs = (14, 18)
  config.loss.label_smoothing = 0.1
  return config
