"""Per-channel mean and standard deviation of a training split, in [0, 1] units, for config.data.mean/std.

  python -m lightcls.data.stats --config=configs/fashion_mnist.py

The images are those the model is trained on (decoded, resized, box-cropped and grayscale as configured),
before any random augmentation. A validation part carved from train (data.val_fraction) is left out.
"""
from __future__ import annotations

import sys

import numpy as np
from absl import app, flags, logging

from lightcls import cli, config_utils
from lightcls.data import pipeline, sources

FLAGS = flags.FLAGS


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel of uint8 NHWC images scaled to [0, 1]; sums in float64 over chunks, so a
  large split needs no float copy of itself."""
  total = np.zeros(images.shape[-1])
  squares = np.zeros(images.shape[-1])
  for start in range(0, len(images), chunk):
    pixels = images[start:start + chunk].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    total += pixels.sum(0)
    squares += np.square(pixels).sum(0)
  count = images.size // images.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (tests import this module beside others
  that define --config too)."""
  cli.define_config_flag()


def main(argv: list[str]) -> None:
  del argv
  logging.get_absl_handler().addFilter(cli.OwnInfoOnly())
  data = FLAGS.config.data
  try:
    config_utils.validate(FLAGS.config)
    dataset = pipeline.with_validation(sources.load(data), data.val_fraction, data.val_seed)
  except config_utils.ConfigError as error:
    sys.exit(f'lightcls: {error}')
  train, _ = pipeline.prepared_split(dataset.train, pipeline.preprocess_options(data, train=True),
                                     dataset.class_names, 'train')
  mean, std = channel_stats(train.images)
  print(f'# {len(train)} training images at {data.image_size}x{data.image_size}')
  print(f'config.data.mean = {mean}')
  print(f'config.data.std = {std}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
