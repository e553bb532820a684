"""Seed 000's best Stanford Cars run (C-50, 83.79% top-1 from scratch): GhostNet with the thesis head
(out_channels 320), 227 px RGB, flip + affine + colour jitter, label smoothing, AdamW with weight decay 0.6.

  python -m lightcls.data.prepare --source=cars --data_dir=$HOME/data/stanford_cars   # once (optional)
  python -m lightcls.main --config=configs/ghostnet_cars.py --workdir=runs/ghostnet_cars \\
      --config.data.data_dir=$HOME/data/stanford_cars

`data_dir` holds the original files, either car_ims.tgz + cars_annos.mat + car_devkit.tgz, or
cars_train.tgz + cars_test.tgz + car_devkit.tgz + cars_test_annos_withlabels.mat. The official test split
is the eval split, as in the thesis. At most 200 epochs; as in the thesis the run stops once the eval loss
has not improved for 15 epochs (C-50 reached its best at epoch 129), and the best checkpoint is kept.

The thesis' goal is a phone app that names a car from a photo: when training ends the best checkpoint is
exported as an int8 TFLite model that takes camera pixels (uint8 RGB, 480x640) and resizes and normalises
them itself, into runs/ghostnet_cars/export/tflite-int8-raw/ with labels.txt (the devkit's class names).
Try it on photos with
  python -m lightcls.predict --model=runs/ghostnet_cars/export/tflite-int8-raw/model.tflite my_photos/

Variants `:c3`, `:c7`, `:c14`, `:c22` are the baselines of the thesis' step-by-step series (section 4.2), each
C-50 with the later steps undone and no export; experiments/sweeps/thesis_*.py start from them.
"""
from configs import default

# Each baseline of the series: the changes from the one before it (C-3's from C-50).
SERIES = {
    'c3': {  # C-3: normalised RGB, label smoothing, dropout 0.2, no augmentation
        'augment.order': (),
        'augment.erasing.scale': (0.02, 0.25),  # RandomErasing's in config_template.yml (3.3), for C-5/C-6
        'optimizer.name': 'adam', 'optimizer.weight_decay': 0.0,  # Adam until 4.2.6 (section 4's assumptions)
        'model.head_features': 1280,  # the thesis head at GhostNet's 1280 until 4.2.8
        'schedule.name': 'constant',  # no learning-rate scheduler until 4.2.9
        'export.formats': (),         # search runs; export the chosen one with python -m lightcls.export
    },
    'c7': {'augment.order': ('hflip', 'affine', 'color_jitter')},  # the best of 4.2.3
    'c14': {'optimizer.name': 'adamw', 'optimizer.weight_decay': 0.2},  # the best of 4.2.6 (4,153,090 params)
    'c22': {'model.head_features': 320},  # the best of 4.2.8
}


def get_config(variant: str = 'c50'):
  config = c50()
  if variant == 'c50':
    return config
  if variant not in SERIES:
    raise ValueError(f'ghostnet_cars.py:{variant}: choose c50 or one of {list(SERIES)}')
  names = list(SERIES)
  for name in names[:names.index(variant) + 1]:
    for key, value in SERIES[name].items():
      *path, last = key.split('.')
      node = config
      for part in path:
        node = node[part]
      node[last] = value
  return config


def c50():
  config = default.get_config()
  config.data.source = 'cars'
  config.data.image_size = 227
  config.data.mean = (0.4707, 0.4602, 0.4550)  # the thesis' training-set statistics
  config.data.std = (0.2594, 0.2585, 0.2635)
  config.data.cache_dir = 'runs/cache'         # decode the 16,185 photos once for every run
  config.augment.order = ('hflip', 'affine', 'color_jitter')
  config.augment.hflip.p = 0.5
  config.augment.affine.update(degrees=25.0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=8.0)
  config.augment.color_jitter.update(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
  config.model.name = 'ghostnet'
  config.model.head = 'thesis'
  config.model.head_features = 320
  config.model.dropout = 0.2
  config.optimizer.name = 'adamw'
  config.optimizer.lr = 1e-3
  config.optimizer.weight_decay = 0.6
  config.schedule.milestones_epochs = (67, 82, 95, 107)
  config.schedule.gamma = 0.1
  config.loss.label_smoothing = 0.1
  config.early_stop.patience = 15
  config.early_stop.monitor = 'eval/loss'
  config.train.batch_size = 64
  config.train.total_epochs = 200.0
  config.train.checkpoint_every_steps = 50  # Colab sessions end without notice: lose at most 50 of the 128 steps
                                            # of an epoch (the same command resumes)
  config.export.formats = ('tflite',)
  config.export.quantize = 'int8'
  config.export.raw_input = True
  config.export.input_size = (480, 640)
  return config
