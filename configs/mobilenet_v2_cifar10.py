"""Seed 003's setting done the way the study itself recommends: MobileNetV2 on CIFAR-10 at 32x32 with the early
strides reduced (small_input) instead of the deep blocks removed, from tfds by name.

  pip install -e ".[tf]"
  python -m lightcls.main --config=configs/mobilenet_v2_cifar10.py --workdir=runs/mobilenet_v2_cifar10

CIFAR-10 downloads through tfds on first use (to ~/tensorflow_datasets, or data.data_dir).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'tfds'
  config.data.name = 'cifar10'                 # train / test splits from lightcls/data/tfds_source.py
  config.data.image_size = 32
  config.data.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training set
  config.data.std = (0.2470, 0.2435, 0.2616)
  config.augment.order = ('crop', 'hflip', 'erasing')
  config.augment.crop.padding = 4
  config.augment.erasing.p = 0.25
  config.model.name = 'mobilenet_v2'
  config.model.small_input = True
  config.model.dropout = 0.2
  config.optimizer.name = 'sgd'
  config.optimizer.lr = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.train.batch_size = 128
  config.train.total_epochs = 60.0
  config.schedule.milestones_epochs = (30, 45)
  config.loss.label_smoothing = 0.1
  return config
