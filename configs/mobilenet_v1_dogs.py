"""Seed 004: MobileNetV1 on Stanford Dogs from Keras ImageNet weights, the convolutional base frozen (weights
and BatchNorm statistics) and only the classifier trained with Adam, 30 epochs. The variant is
`width,resolution` (alpha x input size; default 1.0,224):

  python -m lightcls.main --config=configs/mobilenet_v1_dogs.py:0.75,192 --workdir=runs/mnv1_dogs_075_192 \\
      --config.init.checkpoint=mobilenet_7_5_192_tf_no_top.h5

The paper's table: 83.3% (1.0-224), 81.9% (0.75-224 and 1.0-192), 80.5% (0.75-192); the study reached 77.6%
(1.0-224) and 71.9% (0.75-224). `init.checkpoint` is the keras.applications MobileNet file of the same alpha
and size (with or without top). Pixels are scaled to [-1, 1] as keras' mobilenet.preprocess_input does.
Stanford Dogs comes from tfds (its archives download on first use). The study tuned Adam's betas per run
without listing them: set --config.optimizer.b1 / b2 (Keras defaults below).
"""
from configs import default


def get_config(variant: str = '1.0,224'):
  try:
    width, resolution = float(variant.split(',')[0]), int(variant.split(',')[1])
  except (ValueError, IndexError):
    raise ValueError(f'configs/mobilenet_v1_dogs.py takes "width,resolution" (e.g. :0.75,192); got {variant!r}')
  config = default.get_config()
  config.data.source = 'tfds'
  config.data.name = 'stanford_dogs'
  config.data.image_size = resolution
  config.data.mean, config.data.std = (0.5,), (0.5,)   # x / 127.5 - 1
  config.model.name = 'mobilenet_v1'
  config.model.width = width
  config.model.dropout = 1e-3          # keras.applications.MobileNet's default
  config.model.padding = 'same'        # Keras weights: TF padding and BatchNorm epsilon
  config.model.bn_eps = 1e-3
  config.init.reference = 'MobileNet'
  config.init.required = True          # a frozen random base learns little
  config.freeze.trainable = 'classifier'
  config.optimizer.name = 'adam'
  config.optimizer.lr = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-7          # Keras' Adam epsilon
  config.optimizer.weight_decay = 0.0
  config.schedule.name = 'constant'
  config.train.batch_size = 32
  config.train.total_epochs = 30.0
  return config
