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
  data.source = 'digits'              # digits | tfds | arrays (arrays: passed to train_and_evaluate)
  data.name = ''                      # tfds dataset name, e.g. 'cifar10'
  data.data_dir = placeholder(str)    # tfds data_dir (None: tfds default, ~/tensorflow_datasets)
  data.manual_dir = placeholder(str)  # tfds manual_dir for datasets whose files you download yourself
  data.train_split = 'train'
  data.eval_split = 'test'
  data.image_size = 32                # images are resized once to image_size x image_size on the host
  data.mean = (0.485, 0.456, 0.406)   # per channel, in [0, 1] units (one value for grayscale)
  data.std = (0.229, 0.224, 0.225)

  config.augment = augment = ml_collections.ConfigDict()  # on the device, in the train step
  augment.crop_padding = 0            # RandomCrop(size, padding=crop_padding): random shifts up to that
  augment.hflip = 0.0                 # RandomHorizontalFlip(p=hflip)

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
