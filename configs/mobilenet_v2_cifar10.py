"""Seed 003: MobileNetV2 on CIFAR-10 at 32x32, from tfds by name. Two variants:

  ''       the way the study itself recommends: the early strides reduced (small_input) so the deep layers
           keep their resolution, with a modern recipe (SGD nesterov, crop + flip + erasing, label smoothing)
  level1   the study's level 1: the ImageNet network as is (the deep layers see 1x1 maps), width 0.9, SGD
           lr 5e-4 momentum 0.9: 65% in the study

  pip install -e ".[tf]"
  python -m lightcls.main --config=configs/mobilenet_v2_cifar10.py --workdir=runs/mobilenet_v2_cifar10
  python -m lightcls.main --config=configs/mobilenet_v2_cifar10.py:level1 --workdir=runs/mobilenet_v2_level1

CIFAR-10 downloads through tfds on first use (to ~/tensorflow_datasets, or data.data_dir).
"""
from configs import default


def get_config(variant: str = ''):
  if variant not in ('', 'level1'):
    raise ValueError(f"configs/mobilenet_v2_cifar10.py has no variant {variant!r}; choose '' or 'level1'")
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
  if variant == 'level1':
    config.augment.order = ('crop', 'hflip')
    config.model.small_input = False
    config.model.width = 0.9
    config.model.dropout = None
    config.optimizer.update(lr=5e-4, nesterov=False, weight_decay=0.0)
    config.schedule.name = 'constant'
    config.loss.label_smoothing = 0.0
  return config
