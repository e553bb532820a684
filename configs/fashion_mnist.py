"""Our lightweight recipe for real Fashion-MNIST (60,000 / 10,000 28x28 grayscale images, from the IDX files
of the Debian package `dataset-fashion-mnist`): small-input GhostNet 0.5 (1.3M parameters), random crop +
flip + erasing on the device, AdamW without bias decay, half an epoch of warmup then cosine, label smoothing, and
a weight average evaluated beside the weights.

  python -m lightcls.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist            # 30 epochs
  python -m lightcls.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist_cpu \\
      --config.train.total_epochs=3                                                                # ~30 min, 2 CPU cores

The stride-8 small-input network ends in 4x4 maps at 28 px. Published peers (REFERENCE.md): MobileNet 95.0%,
ResNet18 94.9%, WRN-28-10 + random erasing 96.3%; seed 002's ImageNet-pretrained nets at 224 px 95.7-96.3%.
Results of this config: experiments/RESULTS.md.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'idx'          # data.data_dir None: /usr/share/datasets/fashion-mnist
  config.data.image_size = 28         # native; no resize
  config.data.mean = (0.2860,)        # python -m lightcls.data.stats --config=configs/fashion_mnist.py
  config.data.std = (0.3530,)
  config.augment.order = ('crop', 'hflip', 'erasing')
  config.augment.crop.padding = 2
  config.augment.erasing.p = 0.25
  config.model.name = 'ghostnet'
  config.model.width = 0.5
  config.model.small_input = True
  config.optimizer.name = 'adamw'
  config.optimizer.lr = 3e-3
  config.optimizer.weight_decay = 0.05
  config.optimizer.no_bias_decay = True
  config.optimizer.ema_decay = 0.998
  config.schedule.name = 'cosine'
  config.schedule.warmup_epochs = 0.5      # < 1 epoch: the rate ramps step by step
  config.schedule.warmup_from = 0.1
  config.loss.label_smoothing = 0.1
  config.train.batch_size = 128
  config.train.total_epochs = 30.0
  return config
