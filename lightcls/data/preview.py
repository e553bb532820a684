"""A grid of augmented training images with their labels, as the train step sees them (before normalisation).

  python -m lightcls.data.preview --config=configs/ghostnet_cars.py --out=preview.png [--workdir=runs/x]

Each row is one training image; its first cell is the cached image, the others are independent draws of
`config.augment` (MixUp/CutMix included: the label then names the image's own class and its weight).
With --workdir the grid also goes to that run's TensorBoard as `images/augmented`.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from lightcls import cli, config_utils, writers
from lightcls.data import augment, pipeline, sources

FLAGS = flags.FLAGS


def augmented_draws(images: np.ndarray, config, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows, draws, H, W, C) uint8 augmented versions of each image, and each version's own-label weight
  (1 unless MixUp/CutMix mixed it). The whole batch of every draw is augmented together, as in training."""
  step = jax.jit(lambda key, batch: augment.training_batch(key, batch, config.augment, tuple(config.data.mean),
                                                           tuple(config.data.std)))
  versions, weights = [], []
  for key in jax.random.split(jax.random.PRNGKey(seed), draws):
    pixels, own_weight = step(key, images)
    versions.append(np.asarray(np.clip(np.round(pixels * 255), 0, 255), np.uint8))
    weights.append(np.broadcast_to(np.asarray(own_weight), (len(images),)))
  return np.stack(versions, 1), np.stack(weights, 1)


def grid(originals: np.ndarray, versions: np.ndarray, captions: list[list[str]], cell: int = 128) -> np.ndarray:
  """An RGB image: one row per original, the original first, each cell captioned underneath."""
  rows, columns = versions.shape[0], versions.shape[1] + 1
  text_height = 14
  canvas = Image.new('RGB', (columns * cell, rows * (cell + text_height)), 'white')
  draw = ImageDraw.Draw(canvas)
  for r in range(rows):
    for c, image in enumerate([originals[r], *versions[r]]):
      tile = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert('RGB')
      x, y = c * cell, r * (cell + text_height)
      canvas.paste(tile.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
      draw.text((x + 2, y + cell), captions[r][c][:cell // 6], fill='black')
  return np.asarray(canvas)


def preview(config, rows: int, draws: int, seed: int) -> np.ndarray:
  """The grid image of `rows` random training images of `config` and `draws` augmentations of each."""
  data = config.data
  dataset = pipeline.with_validation(sources.load(data), data.val_fraction, data.val_seed)
  picked = np.sort(np.random.default_rng(seed).choice(len(dataset.train), rows, replace=False))
  train, _ = pipeline.prepared_split(pipeline.subset(dataset.train, picked),
                                     pipeline.preprocess_options(data, train=True), dataset.class_names, 'train')
  return captioned_grid(train.images, train.labels, dataset.class_names, config, draws, seed)


def captioned_grid(images: np.ndarray, labels: np.ndarray, class_names, config, draws: int, seed: int) -> np.ndarray:
  """The grid of these (cached, uint8) training images, each followed by `draws` augmentations, captioned."""
  versions, weights = augmented_draws(images, config, draws, seed)
  names = [class_names[label] for label in labels]
  captions = [[f'{name} (cached)'] + [name if w == 1 else f'{name} {w:.2f}' for w in weights[r]]
              for r, name in enumerate(names)]
  return grid(images, versions, captions)


def training_grid(config, split, class_names, rows: int = 6, draws: int = 5, seed: int = 0) -> np.ndarray:
  """`captioned_grid` of `rows` random images of an already prepared training split (what a run writes to
  TensorBoard when it starts)."""
  picked = np.sort(np.random.default_rng(seed).choice(len(split), min(rows, len(split)), replace=False))
  return captioned_grid(split.images[picked], split.labels[picked], class_names, config, draws, seed)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (tests import this module beside others
  that define --config too)."""
  cli.define_config_flag()
  flags.DEFINE_string('out', 'augment_preview.png', 'Where to write the PNG grid.')
  flags.DEFINE_string('workdir', None, 'Also write the grid to this run directory\'s TensorBoard.')
  flags.DEFINE_integer('rows', 6, 'Training images shown (one per row).')
  flags.DEFINE_integer('draws', 5, 'Augmented versions of each image.')
  flags.DEFINE_integer('seed', 0, 'Picks the images and the augmentation randomness.')


def main(argv: list[str]) -> None:
  cli.start(argv)
  try:
    config_utils.validate(FLAGS.config)
    image = preview(FLAGS.config, FLAGS.rows, FLAGS.draws, FLAGS.seed)
  except config_utils.ConfigError as error:
    sys.exit(f'lightcls: {error}')
  Image.fromarray(image).save(FLAGS.out)
  print(f'Wrote {FLAGS.out} ({image.shape[1]}x{image.shape[0]})')
  if FLAGS.workdir:
    writer = writers.EventWriter(os.path.join(FLAGS.workdir, 'tensorboard'))
    writer.write_images(0, {'images/augmented': image[None]})
    writer.close()
    print(f'and to {FLAGS.workdir}/tensorboard as images/augmented')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
