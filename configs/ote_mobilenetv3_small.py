"""Seed 002's adaptive recipe (configs/ote_mobilenetv3_large.py) for MobileNetV3-Small: 95.74% on
Fashion-MNIST from ImageNet weights in the paper.

  python -m lightcls.main --config=configs/ote_mobilenetv3_small.py --workdir=runs/ote_mnv3s \\
      --config.data.name=fashion_mnist --config.init.checkpoint=mobilenetv3_small_100.safetensors
"""
from configs import ote_mobilenetv3_large


def get_config():
  config = ote_mobilenetv3_large.get_config()
  config.model.name = 'mobilenet_v3_small'
  config.init.reference = 'mobilenetv3_small_100'
  return config
