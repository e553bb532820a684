"""Every config key with its default. Experiment configs import this and override a few keys.

Durations are given in epochs (`*_epochs`) or in steps (`*_steps`); a `*_steps` value, when set, takes
precedence. Run with the defaults (GhostNet 1.0 on scikit-learn's digits):

  python -m lightcls.main --config=configs/default.py --workdir=runs/default
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.source = 'digits'              # digits | tfds | idx | folder | cars | arrays (given to train_and_evaluate)
  data.name = ''                      # tfds dataset name, e.g. 'cifar10' (see lightcls/data/tfds_source.py)
  data.data_dir = placeholder(str)    # where the files are: tfds data_dir (None: ~/tensorflow_datasets); idx
                                      # directory (None: /usr/share/datasets/fashion-mnist); folder root
                                      # (root/<split>/<class>/*.jpg); cars: the original Stanford Cars files
  data.manual_dir = placeholder(str)  # tfds manual_dir for datasets whose files you download yourself
  data.train_split = placeholder(str)  # None: the dataset's own (tfds: its table; folders: 'train')
  data.eval_split = placeholder(str)   # None: the dataset's own test split (tfds: its table; folders: 'test')
  data.val_fraction = 0.0             # > 0: evaluate on this stratified random part of train instead
  data.val_seed = 0                   # ... drawn with this seed
  data.image_size = 32                # images are decoded and resized once to image_size x image_size
  data.train_resize = 'stretch'       # stretch | center_crop (keep the aspect ratio, crop the middle)
  data.eval_resize = 'stretch'
  data.grayscale = False              # convert to one channel (ITU-R 601 luma) before caching
  data.crop_to_boxes = False          # training images cut to their bounding box (datasets with boxes)
  data.erase_background = False       # with crop_to_boxes: box kept in place on a white image instead
  data.cache_dir = placeholder(str)   # keep decoded splits here as .npy for later runs (None: memory only)
  data.mean = (0.485, 0.456, 0.406)   # per channel, in [0, 1] units (one value for grayscale);
  data.std = (0.229, 0.224, 0.225)    # python -m lightcls.data.stats computes them for a dataset

  def number_or_tuple(value):         # torchvision takes a number v (meaning +-v) or a (min, max) tuple here
    return ml_collections.FieldReference(value, field_type=object)

  # Random, on the device, in the train step; each op as torchvision's transform of the same parameters
  # (lightcls/data/augment.py). Geometric fills are 0-255 pixel values (a number or one per channel).
  config.augment = augment = ml_collections.ConfigDict()
  augment.order = ()                  # per-image ops, applied in this order: any of crop hflip affine rotation
                                      # perspective resized_crop color_jitter erasing augmix, e.g. ('hflip', 'affine')
  augment.crop = ml_collections.ConfigDict(dict(padding=4))  # RandomCrop(size, padding), zero fill
  augment.hflip = ml_collections.ConfigDict(dict(p=0.5))     # RandomHorizontalFlip(p)
  augment.affine = ml_collections.ConfigDict(dict(  # RandomAffine
      degrees=number_or_tuple(0.0), translate=(0.0, 0.0), scale=(1.0, 1.0),
      shear=number_or_tuple(0.0),     # x only, or (xmin, xmax, ymin, ymax)
      interpolation='nearest', fill=number_or_tuple(0.0)))  # nearest | bilinear
  augment.rotation = ml_collections.ConfigDict(dict(  # RandomRotation
      degrees=number_or_tuple(0.0), interpolation='nearest', fill=number_or_tuple(0.0)))
  augment.perspective = ml_collections.ConfigDict(dict(  # RandomPerspective
      distortion_scale=0.5, p=0.5, interpolation='bilinear', fill=number_or_tuple(0.0)))
  augment.resized_crop = ml_collections.ConfigDict(dict(  # RandomResizedCrop(image_size), bilinear
      scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)))
  augment.color_jitter = ml_collections.ConfigDict(dict(  # ColorJitter, the four in a random order per image
      brightness=number_or_tuple(0.0), contrast=number_or_tuple(0.0), saturation=number_or_tuple(0.0),
      hue=number_or_tuple(0.0)))
  augment.erasing = ml_collections.ConfigDict(dict(  # RandomErasing, as placed after Normalize: value in
      p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3),    # normalised units (0: the mean colour), a number,
      value=number_or_tuple(0.0)))                    # one per channel, or 'random'
  augment.augmix = ml_collections.ConfigDict(dict(  # AugMix(severity, mixture_width, chain_depth, alpha,
      severity=3, width=3, depth=-1, alpha=1.0, all_ops=True))  # all_ops); OTE's augmix-m5-w3: 5, 3
  augment.mixup = ml_collections.ConfigDict(dict(alpha=0.0))   # MixUp(alpha), batch level; 0: off
  augment.cutmix = ml_collections.ConfigDict(dict(alpha=0.0))  # CutMix(alpha); with both, one per batch

  config.model = model = ml_collections.ConfigDict()
  model.name = 'ghostnet'
  model.width = 1.0                   # width multiplier
  model.dropout = placeholder(float)   # before the classifier; None: the architecture's own
  model.head_features = placeholder(int)  # width of the head; None: the architecture's own (GhostNet 1280)
  model.head = 'default'              # default | thesis (GhostNet of seed 000: bias-free linear + BN head)
  model.drop_path = placeholder(float)  # stochastic depth of residual blocks (EfficientNet); None: own
  model.small_input = False           # for 28-32 px images: early strides reduced instead of blocks cut
  model.bn_momentum = 0.9             # Flax sense: running = m * running + (1 - m) * batch (PyTorch 0.1)
  model.bn_eps = 1e-5
  model.padding = 'symmetric'         # symmetric (PyTorch/timm) | same (TF/Keras)
  model.dtype = 'float32'             # compute dtype: float32 | bfloat16 (parameters stay float32)
  model.conv_impl = 'auto'            # depthwise/1x1 convolutions: auto (fastest measured) | xla | fast

  config.init = init = ml_collections.ConfigDict()  # weights to start from (not when resuming)
  init.checkpoint = placeholder(str)  # a timm/PyTorch state dict (.pth/.pt/.bin/.safetensors), a Keras
                                      # .weights.h5/.h5/.keras file, or another lightcls run's workdir
  init.reference = placeholder(str)   # the reference model the file belongs to, when the file alone does
                                      # not say the layer order: timm name (.safetensors) or keras.applications
                                      # name (.h5), e.g. 'mobilenetv3_large_100', 'MobileNetV3Large'

  config.freeze = freeze = ml_collections.ConfigDict()  # frozen layers: no updates, BatchNorm statistics fixed
  freeze.trainable = 'all'            # all | classifier | last_blocks (python -m lightcls.summary lists blocks)
  freeze.last_blocks = 1              # with trainable='last_blocks': how many top-level blocks, from the end

  config.optimizer = optimizer = ml_collections.ConfigDict()
  optimizer.name = 'adamw'            # adamw | sgd
  optimizer.lr = 1e-3
  optimizer.weight_decay = 0.01       # adamw: decoupled (as torch.optim.AdamW); sgd: L2 added to gradients
  optimizer.b1 = 0.9
  optimizer.b2 = 0.999
  optimizer.eps = 1e-8
  optimizer.momentum = 0.9            # sgd
  optimizer.nesterov = False          # sgd

  config.schedule = schedule = ml_collections.ConfigDict()
  schedule.name = 'multistep'         # multistep | constant
  schedule.milestones_epochs = ()     # multistep: multiply the rate by gamma at these epochs ...
  schedule.milestones_steps = placeholder(tuple)  # ... or at these steps
  schedule.gamma = 0.1

  config.loss = loss = ml_collections.ConfigDict()
  loss.name = 'cross_entropy'
  loss.label_smoothing = 0.0

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64               # global batch, split over all devices
  train.eval_batch_size = 256
  train.total_epochs = 10.0
  train.total_steps = placeholder(int)
  train.log_every_steps = 50
  train.keep_best = 1                 # best checkpoints kept besides the latest
  return config
