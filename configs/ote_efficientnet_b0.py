"""Seed 002's adaptive recipe (OpenVINO Training Extensions) for EfficientNet-B0: SGD inside SAM (rho 0.05),
no bias decay with the biases' rate doubled, 5 warmup epochs from lr/10, ReduceLROnPlateauV2 on the training
loss with its early stop, AugMix + flip + crop + rotation, and the AM-Softmax head. The paper: 93.77% on
Stanford Cars from ImageNet weights (REFERENCE.md). The dataset is an override; for example

  python -m lightcls.main --config=configs/ote_efficientnet_b0.py --workdir=runs/ote_b0_flowers \\
      --config.data.name=oxford_flowers102 --config.init.checkpoint=efficientnet_b0.safetensors

Any tfds name of lightcls/data/tfds_source.py works (cifar100, dtd, oxford_iiit_pet, cars196 with
data.manual_dir, ...), or `--config.data.source=folder --config.data.data_dir=...` for an image folder.
The seed fine-tunes ImageNet weights (init.checkpoint: a timm efficientnet_b0 state dict); the learning rate
is the middle of its search range for this model (0.001-0.01). `--config.optimizer.lr=auto` searches that
range on the dataset first, as the seed does: Optuna TPE, 15 trials of 6 epochs at a constant rate, step
0.001, median pruning (README, "Finding the learning rate"); schedule.min_lr stays 0.005 / 200.
"""
from configs import default


def ote_recipe(config):
  """The parts of seed 002's recipe common to its models: `config` changed in place and returned."""
  config.data.source = 'tfds'
  config.data.name = 'oxford_flowers102'
  config.data.image_size = 224
  config.data.mean, config.data.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  config.augment.order = ('resized_crop', 'hflip', 'rotation', 'augmix')
  config.augment.resized_crop.update(p=0.3, scale=(0.81, 0.81), ratio=(1.0, 1.0))  # crop 0.9 of each side
  config.augment.rotation.update(p=0.3, degrees=10.0)
  config.augment.augmix.update(severity=5, width=3, depth=-1, alpha=1.0)            # augmix-m5-w3
  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.no_bias_decay = True
  config.optimizer.bias_lr_factor = 2.0
  config.optimizer.sam_rho = 0.05
  config.schedule.name = 'plateau_v2'
  config.schedule.warmup_epochs = 5.0
  config.schedule.warmup_from = 0.1
  config.schedule.monitor = 'train/loss'
  config.schedule.mode = 'min'
  config.schedule.factor = 0.1
  config.schedule.patience = 5
  config.schedule.threshold = 2e-4
  config.schedule.stop_patience = 5
  config.train.batch_size = 84
  config.train.total_epochs = 200.0
  config.lr_search.update(method='optuna', trials=15, trial_epochs=6, step=0.001, startup_trials=5)
  return config


def get_config():
  config = ote_recipe(default.get_config())
  config.model.name = 'efficientnet_b0'
  config.model.classifier = 'cosine'
  config.init.reference = 'efficientnet_b0'
  config.loss.name = 'am_softmax'     # margin 0.35, scale max(sqrt(2) ln(C - 1), 3)
  config.loss.margin = 0.35
  config.optimizer.lr = 0.005
  config.lr_search.update(low=0.001, high=0.01)
  config.schedule.min_lr = config.optimizer.lr / 200
  return config
