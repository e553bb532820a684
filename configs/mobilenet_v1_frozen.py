"""Seed 004's transfer setup: MobileNetV1 with ImageNet weights, the convolutional base frozen (weights and
BatchNorm statistics), only a new classifier trained, AdamW. Here on the digits at 64 px; give the Keras
weights file (keras.applications' `mobilenet_1_0_224_tf.h5` or `..._no_top.h5`) on the command line:

  python -m lightcls.main --config=configs/mobilenet_v1_frozen.py --workdir=runs/mobilenet_v1_frozen \\
      --config.init.checkpoint=mobilenet_1_0_224_tf.h5

Without `init.checkpoint` the run starts from random weights (and a frozen random base learns little).
"""
from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.data.image_size = 64         # grey digits: the RGB stem of the weights is summed into a grey one
  config.model.name = 'mobilenet_v1'
  config.model.padding = 'same'       # Keras weights: TF padding and BatchNorm epsilon
  config.model.bn_eps = 1e-3
  config.init.reference = 'MobileNet'  # the keras.applications model of the weights file
  config.freeze.trainable = 'classifier'
  config.optimizer.weight_decay = 0.0
  config.optimizer.lr = 1e-3
  return config
