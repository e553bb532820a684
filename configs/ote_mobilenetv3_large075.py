"""Seed 002's adaptive recipe (configs/ote_mobilenetv3_large.py) for MobileNetV3-Large at width 0.75.

  python -m lightcls.main --config=configs/ote_mobilenetv3_large075.py --workdir=runs/ote_mnv3l075 \\
      --config.data.name=oxford_flowers102 --config.init.checkpoint=mobilenetv3_large_075.safetensors
"""
from configs import ote_mobilenetv3_large


def get_config():
  config = ote_mobilenetv3_large.get_config()
  config.model.width = 0.75
  config.init.reference = 'mobilenetv3_large_075'
  return config
