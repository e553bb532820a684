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
  config.tags = ()                    # free labels of this run, shown by python -m lightcls.report (sweeps set
                                      # them to (sweep name, run name))

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
  augment.rotation = ml_collections.ConfigDict(dict(  # RandomRotation (in RandomApply with p < 1)
      degrees=number_or_tuple(0.0), interpolation='nearest', fill=number_or_tuple(0.0), p=1.0))
  augment.perspective = ml_collections.ConfigDict(dict(  # RandomPerspective
      distortion_scale=0.5, p=0.5, interpolation='bilinear', fill=number_or_tuple(0.0)))
  augment.resized_crop = ml_collections.ConfigDict(dict(  # RandomResizedCrop(image_size), bilinear
      scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p=1.0))     # (in RandomApply with p < 1)
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
  model.cpu_codegen = 'fast_compile'  # XLA:CPU kernels: fast_compile (older emitters: 10-40% shorter
                                      # compiles) | fast_steps (XLA's newer emitters; experiments/RESULTS.md)
  model.classifier = 'linear'         # linear | cosine (normalised features and weights: AM-Softmax's head)

  config.init = init = ml_collections.ConfigDict()  # weights to start from (not when resuming)
  init.checkpoint = placeholder(str)  # a timm/PyTorch state dict (.pth/.pt/.bin/.safetensors), a Keras
                                      # .weights.h5/.h5/.keras file, or another lightcls run's workdir
  init.reference = placeholder(str)   # the reference model the file belongs to, when the file alone does
                                      # not say the layer order: timm name (.safetensors) or keras.applications
                                      # name (.h5), e.g. 'mobilenetv3_large_100', 'MobileNetV3Large'
  init.required = False               # True: refuse to start without init.checkpoint (fine-tuning recipes)

  config.freeze = freeze = ml_collections.ConfigDict()  # frozen layers: no updates, BatchNorm statistics fixed
  freeze.trainable = 'all'            # all | classifier | last_blocks (python -m lightcls.summary lists blocks)
  freeze.last_blocks = 1              # with trainable='last_blocks': how many top-level blocks, from the end

  config.optimizer = optimizer = ml_collections.ConfigDict()
  optimizer.name = 'adamw'            # sgd | adam | adamw | rmsprop (each as its torch.optim namesake)
  optimizer.lr = ml_collections.FieldReference(1e-3, field_type=object)  # or 'auto': found by config.lr_search
  optimizer.weight_decay = 0.01       # adamw: decoupled (torch AdamW); sgd, adam, rmsprop: L2 added to gradients
  optimizer.b1 = 0.9                  # adam, adamw
  optimizer.b2 = 0.999
  optimizer.eps = 1e-8                # adam, adamw, rmsprop
  optimizer.momentum = 0.9            # sgd, rmsprop
  optimizer.nesterov = False          # sgd
  optimizer.rmsprop_decay = 0.99      # rmsprop: torch's alpha (smoothing of the squared gradients)
  optimizer.centered = False          # rmsprop
  optimizer.no_bias_decay = False     # no weight decay for biases and BatchNorm scale/bias (seed 002)
  optimizer.bias_lr_factor = 1.0      # learning rate of biases x this (seed 002: 2)
  optimizer.clip_norm = placeholder(float)  # clip gradients to this global L2 norm (None: no clipping)
  optimizer.sam_rho = 0.0             # > 0: SAM around the optimizer, ascent radius rho (seed 002: 0.05)
  optimizer.sam_adaptive = False      # ASAM: the ascent scaled by |w|
  optimizer.ema_decay = 0.0           # > 0: an exponential moving average of the weights (and BatchNorm
                                      # statistics), evaluated beside them each epoch (eval_ema/*); its
                                      # decay warms up as min(ema_decay, (1 + step) / (10 + step))

  # The learning rate: warmup, then the named schedule. Plateau schedules decide after each epoch's
  # evaluation, on the host; their state is checkpointed, so a resumed run decides the same.
  config.schedule = schedule = ml_collections.ConfigDict()
  schedule.name = 'multistep'         # constant | multistep | exponential | cosine | plateau | plateau_v2
  schedule.milestones_epochs = ()     # multistep: multiply the rate by gamma at these epochs ...
  schedule.milestones_steps = placeholder(tuple)  # ... or at these steps
  schedule.gamma = 0.1                # multistep factor; exponential: lr * gamma ** epoch (seed 000: 0.95-0.99)
  schedule.min_lr = 0.0               # cosine: the final rate; plateau, plateau_v2: the floor
  schedule.warmup_epochs = 0.0        # linear warmup from warmup_from * lr to lr (seed 002: 5 epochs from lr/10)
  schedule.warmup_from = 0.1
  schedule.monitor = 'eval/loss'      # plateau: eval/loss | eval/top1 | train/loss (plateau_v2: seed 002's train/loss)
  schedule.mode = 'auto'              # plateau: min | max | auto (max for top1, min for losses)
  schedule.factor = 0.1               # plateau: lr * factor on a plateau
  schedule.patience = 10              # plateau: epochs without improvement before a drop
  schedule.threshold = 1e-4           # plateau: the least change that counts as improvement ...
  schedule.threshold_mode = 'rel'     # ... rel (relative to the best) | abs
  schedule.cooldown = 0               # plateau: epochs after a drop before counting again
  schedule.forced_drop_epoch = placeholder(int)  # plateau_v2: drop here if none happened yet (None:
                                                 # int(0.75 * total epochs) - warmup epochs, as seed 002)
  schedule.stop_patience = 5          # plateau_v2: once lr <= min_lr, stop after this many epochs without a
                                      # new best eval top-1 (0: never stop)

  # How optimizer.lr='auto' is found before training (python -m lightcls.lr_search runs the same on its
  # own). The search trains copies of the model from its initial weights; training then starts from them.
  config.lr_search = lr_search = ml_collections.ConfigDict()
  lr_search.method = 'range_test'     # range_test (fast.ai: one epoch, lr rising exponentially) | optuna (TPE)
  lr_search.min_lr = 1e-6             # range_test: the sweep's first ...
  lr_search.max_lr = 1.0              # ... and last learning rate
  lr_search.steps = placeholder(int)  # range_test: steps of the sweep (None: one epoch)
  lr_search.smoothing = 0.05          # range_test: weight of each new loss in the smoothed loss (debiased EMA)
  lr_search.diverge_factor = 4.0      # range_test: stop once the smoothed loss exceeds this x its minimum
  lr_search.warmup_epochs = 0         # range_test: epochs at warmup_lr first (seed 002: 1, for pretrained
  lr_search.warmup_lr = 1e-4          # weights, so the sweep does not wreck them)
  lr_search.low = 0.001               # optuna: the learning rates tried, low to high in steps of `step`
  lr_search.high = 0.01               # (seed 002: EfficientNet 0.001-0.01, MobileNetV3 0.005-0.029)
  lr_search.step = 0.001
  lr_search.trials = 15               # optuna: trials of the study in all (over every worker sharing it)
  lr_search.trial_epochs = 6          # optuna: epochs per trial at a constant learning rate
  lr_search.startup_trials = 5        # optuna: random trials before TPE models the results
  lr_search.prune = True              # optuna: stop a trial whose eval top-1 is below the median of
                                      # earlier trials at the same epoch (MedianPruner)
  lr_search.storage = placeholder(str)  # optuna: an RDB URL (several machines share a study through it);
                                        # None: sqlite in <workdir>/lr_search/
  lr_search.study = 'lr'              # optuna: the study's name in the storage

  config.early_stop = early_stop = ml_collections.ConfigDict()  # stop when the monitored value stalls
  early_stop.patience = 0             # epochs without improvement before stopping (0: off; seed 000: 15)
  early_stop.monitor = 'eval/loss'    # eval/loss | eval/top1 | train/loss
  early_stop.mode = 'auto'            # min | max | auto
  early_stop.min_delta = 0.0          # the least change that counts as improvement (seed 001: 1e-3)

  config.loss = loss = ml_collections.ConfigDict()
  loss.name = 'cross_entropy'         # cross_entropy | am_softmax (needs model.classifier='cosine')
  loss.label_smoothing = 0.0          # (1 - eps) CE + eps * mean over classes of -log p (seeds 000/001: 0.1)
  loss.margin = 0.35                  # am_softmax: additive cosine margin m
  loss.scale = placeholder(float)     # am_softmax: logit scale s (None: max(sqrt(2) ln(C - 1), 3))
  loss.confidence_penalty = 0.0       # beta: loss - beta * entropy of the prediction

  config.mutual = mutual = ml_collections.ConfigDict()  # deep mutual learning of two models (seed 002)
  mutual.enabled = False              # train a second copy of config.model jointly; evaluated as eval_peer/*
  mutual.loss = 'am_softmax'          # the second model's loss (am_softmax gets a cosine classifier)

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64               # global batch, split over all devices
  train.eval_batch_size = 256
  train.total_epochs = 10.0
  train.total_steps = placeholder(int)
  train.log_every_steps = 50
  train.keep_best = 1                 # best checkpoints kept besides the latest
  train.checkpoint_every_epochs = 1   # checkpoint after every this many epochs' evaluations (and the last) ...
  train.checkpoint_every_steps = placeholder(int)  # ... and every this many steps in between (None: never);
                                      # a SIGTERM (preemption notice) also checkpoints, then exits with 143
  train.on_nonfinite = 'stop'         # NaN/Inf loss or gradient: stop | restore (the last checkpoint, then go
  train.nonfinite_lr_factor = 0.1     # on with the learning rate x this factor, at most `nonfinite_retries`
  train.nonfinite_retries = 3         # times in the run)

  # Several processes training one model (hosts of a TPU pod or a GPU cluster, one process per GPU): each
  # reads its rows of every global batch, only process 0 writes logs (see README, "Scaling out"). Unset
  # values come from the cluster's environment as JAX detects it (SLURM, Open MPI, Cloud TPU).
  config.distributed = distributed = ml_collections.ConfigDict()
  distributed.initialize = 'auto'     # auto: when a value below is set or the environment runs several processes
                                      # (JAX_COORDINATOR_ADDRESS, a SLURM step or Open MPI job of several tasks,
                                      # TPU_WORKER_HOSTNAMES of several hosts) | always (a Cloud TPU VM pod) | never
  distributed.coordinator_address = placeholder(str)  # 'host:port' of process 0, reachable from every process
  distributed.num_processes = placeholder(int)        # processes in all
  distributed.process_id = placeholder(int)           # this process's index, 0 .. num_processes - 1

  # python -m lightcls.export takes its defaults from here; with formats set, the run exports its best
  # checkpoint when training ends (see README, "Deploy").
  config.export = export = ml_collections.ConfigDict()
  export.formats = ()                 # any of tflite | onnx | savedmodel
  export.quantize = 'float32'         # float32 | float16 | int8 (post-training, calibrated on training images)
  export.batch = 1                    # the exported model's batch size; 0: any (dynamic)
  export.raw_input = False            # input uint8 RGB pixels, resized and normalised inside the model
  export.input_size = placeholder(tuple)  # raw_input: (height, width) fed to the model (None: image_size)
  export.verify_images = 64           # validation images the export is checked on against the JAX model
  export.calibration_images = 200     # int8: training images that calibrate the activation ranges
  export.tolerance = placeholder(float)  # max |probability difference| (None: 1e-3 float32, 2e-2 float16)
  export.max_top1_drop = 0.05         # int8: the most top-1 accuracy it may lose on the verification images
  return config
