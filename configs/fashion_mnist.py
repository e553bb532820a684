"""Small-input GhostNet on real Fashion-MNIST (60,000 / 10,000 28x28 grayscale images) from the IDX files of
the Debian package `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`), trained on CPU.

  python -m lightcls.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist

The stride-8 small-input network ends in 4x4 maps at 28 px. Published peers: MobileNet
95.0%, ResNet18 94.9% (REFERENCE.md).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'idx'          # data.data_dir None: /usr/share/datasets/fashion-mnist
  config.data.image_size = 28         # native; no resize
  config.data.mean = (0.2860,)        # python -m lightcls.data.stats --config=configs/fashion_mnist.py
  config.data.std = (0.3530,)
  config.model.name = 'ghostnet'
  config.model.width = 0.5
  config.model.small_input = True
  config.train.batch_size = 128
  config.train.total_epochs = 3.0
  config.optimizer.lr = 3e-3
  config.schedule.milestones_epochs = (2,)
  config.loss.label_smoothing = 0.1
  return config
