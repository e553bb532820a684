"""Seed 002's adaptive recipe for MobileNetV3-Large: configs/ote_efficientnet_b0.py's SAM, no bias decay,
warmup and ReduceLROnPlateauV2, with deep mutual learning instead of a single AM-Softmax model: two
MobileNetV3s trained jointly, the first with cross-entropy, its peer with AM-Softmax (a cosine head). The
paper: 93.76% on Stanford Cars, 96.17% on Fashion-MNIST from ImageNet weights. The dataset is an override:

  python -m lightcls.main --config=configs/ote_mobilenetv3_large.py --workdir=runs/ote_mnv3_flowers \\
      --config.data.name=oxford_flowers102 --config.init.checkpoint=mobilenetv3_large_100.safetensors

Both models start from init.checkpoint (a timm mobilenetv3_large_100 state dict). Learning rate 0.013: the
seed's fixed-rate comparison value, inside its search range for MobileNetV3 (0.005-0.029);
`--config.optimizer.lr=auto` searches that range first, as configs/ote_efficientnet_b0.py describes.
"""
from configs import default
from configs.ote_efficientnet_b0 import ote_recipe


def get_config():
  config = ote_recipe(default.get_config())
  config.model.name = 'mobilenet_v3_large'
  config.init.reference = 'mobilenetv3_large_100'
  config.loss.name = 'cross_entropy'
  config.mutual.enabled = True
  config.mutual.loss = 'am_softmax'
  config.loss.margin = 0.35
  config.optimizer.lr = 0.013
  config.lr_search.update(low=0.005, high=0.029)  # for --config.optimizer.lr=auto (seed 002's TPE search)
  config.schedule.min_lr = config.optimizer.lr / 200
  return config
