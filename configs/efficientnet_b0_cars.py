"""Seed 001: EfficientNet-B0 on Stanford Cars, 224 px, AdamW + ReduceLROnPlateau on the eval loss, early
stopping, label smoothing, flip + affine. Three variants, as the study's best runs:

  ''          from scratch, RGB: 79.0% (SAN-448: weight decay 0.3, dropout 0.2, plateau patience 7)
  gray        from scratch, grayscale: 81.3% (weight decay 0.1, no dropout, patience 7)
  pretrained  from ImageNet weights, RGB: 90.3-91.4% (weight decay 0.01, no dropout, patience 3)

  python -m lightcls.main --config=configs/efficientnet_b0_cars.py --workdir=runs/effnet_cars \\
      --config.data.data_dir=$HOME/data/stanford_cars
  python -m lightcls.main --config=configs/efficientnet_b0_cars.py:gray --workdir=runs/effnet_cars_gray \\
      --config.data.data_dir=$HOME/data/stanford_cars
  python -m lightcls.main --config=configs/efficientnet_b0_cars.py:pretrained --workdir=runs/effnet_cars_pt \\
      --config.data.data_dir=$HOME/data/stanford_cars \\
      --config.init.checkpoint=efficientnet_b0.safetensors

`init.checkpoint` of the pretrained variant is any EfficientNet-B0 ImageNet state dict timm reads (for example
`model.safetensors` of timm/efficientnet_b0.ra_in1k); the classifier starts fresh for the 196 classes.
BatchNorm as the study's model (lukemelas' EfficientNet-PyTorch): momentum 0.01 in PyTorch's sense, eps 1e-3.
"""
from configs import default

VARIANTS = {
    '': dict(weight_decay=0.3, dropout=0.2, patience=7),
    'gray': dict(weight_decay=0.1, dropout=0.0, patience=7),
    'pretrained': dict(weight_decay=0.01, dropout=0.0, patience=3),
}


def get_config(variant: str = ''):
  if variant not in VARIANTS:
    raise ValueError(f'configs/efficientnet_b0_cars.py has no variant {variant!r}; choose one of '
                     f'{sorted(VARIANTS)} (e.g. --config=configs/efficientnet_b0_cars.py:gray)')
  recipe = VARIANTS[variant]
  config = default.get_config()
  config.data.source = 'cars'
  config.data.image_size = 224
  config.data.cache_dir = 'runs/cache'
  if variant == 'gray':
    config.data.grayscale = True
    config.data.mean, config.data.std = (0.462,), (0.270,)
  else:
    config.data.mean, config.data.std = (0.470, 0.460, 0.455), (0.267, 0.266, 0.270)
  config.augment.order = ('hflip', 'affine')
  config.augment.affine.update(degrees=25.0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=8.0)
  config.model.name = 'efficientnet_b0'
  config.model.dropout = recipe['dropout']
  config.model.drop_path = 0.2        # drop-connect 0.2, scaled by block index
  config.model.bn_momentum = 0.99     # PyTorch momentum 0.01
  config.model.bn_eps = 1e-3
  if variant == 'pretrained':
    config.init.reference = 'efficientnet_b0'
    config.init.required = True
  config.optimizer.name = 'adamw'
  config.optimizer.lr = 1e-3
  config.optimizer.weight_decay = recipe['weight_decay']
  config.schedule.name = 'plateau'
  config.schedule.monitor = 'eval/loss'
  config.schedule.factor = 0.1
  config.schedule.patience = recipe['patience']
  config.schedule.threshold = 1e-3
  config.early_stop.patience = 10
  config.early_stop.monitor = 'eval/loss'
  config.early_stop.min_delta = 1e-3
  config.loss.label_smoothing = 0.1
  config.train.batch_size = 32
  config.train.total_epochs = 150.0
  return config
