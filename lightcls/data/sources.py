"""Dataset sources. Each returns a `Dataset` of uint8 NHWC images and int32 labels held in host memory.

TensorFlow is imported only by the tfds source, so the core runs where TF is absent.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import ml_collections
import numpy as np

from lightcls.config_utils import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray  # (N,) int32

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  train: Split
  eval: Split
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _checked_split(images: np.ndarray, labels: np.ndarray, num_classes: int, what: str) -> Split:
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim == 3:  # (N, H, W): grayscale without a channel axis
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'{what} images must be (N, H, W) or (N, H, W, C) with C in (1, 3); got shape {images.shape}')
  if images.dtype != np.uint8:
    raise ValueError(f'{what} images must be uint8 pixels 0..255; got {images.dtype}. '
                     'Convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1].')
  if labels.shape != (len(images),):
    raise ValueError(f'{what} labels must have shape ({len(images)},); got {labels.shape}')
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'{what} labels must be integers in [0, {num_classes}); '
                     f'got {labels.dtype} in [{labels.min()}, {labels.max()}]')
  return Split(images, labels.astype(np.int32))


def from_arrays(train_images: np.ndarray, train_labels: np.ndarray, eval_images: np.ndarray,
                eval_labels: np.ndarray, class_names: Sequence[str] | None = None) -> Dataset:
  """An in-memory dataset from numpy arrays (for notebooks and tests); validates shapes and ranges."""
  num_classes = len(class_names) if class_names else int(max(np.max(train_labels), np.max(eval_labels))) + 1
  names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
  return Dataset(_checked_split(train_images, train_labels, num_classes, 'train'),
                 _checked_split(eval_images, eval_labels, num_classes, 'eval'), names)


def load_digits(config: ml_collections.ConfigDict) -> Dataset:
  """scikit-learn's bundled 1,797 handwritten 8x8 digits; stratified 80/20 split with a fixed seed."""
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
  train_x, eval_x, train_y, eval_y = model_selection.train_test_split(
      pixels, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
  return from_arrays(train_x, train_y, eval_x, eval_y, [str(d) for d in range(10)])


def load_tfds(config: ml_collections.ConfigDict) -> Dataset:
  """A TensorFlow Datasets dataset by name, decoded and resized once with tf.data, cached as uint8."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  tf.config.set_visible_devices([], 'GPU')  # TF must not grab accelerator memory JAX needs
  try:
    builder = tfds.builder(config.name, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f'config.data.name={config.name!r} is not a tfds dataset: {e}') from None
  download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir)
  builder.download_and_prepare(download_config=download_config)
  image_key, label_key = builder.info.supervised_keys
  class_names = tuple(builder.info.features[label_key].names)

  def read(split: str) -> Split:
    ds = builder.as_dataset(split=split, as_supervised=True)
    size = config.image_size

    def resize(image, label):
      if image.shape[:2] != (size, size):
        image = tf.image.resize(image, (size, size), method='bilinear', antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
      return image, label

    ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(1024).prefetch(2)
    images, labels = [], []
    for image_batch, label_batch in ds.as_numpy_iterator():
      images.append(image_batch)
      labels.append(label_batch)
    log.info('%s/%s: %d images decoded at %dx%d', config.name, split, sum(map(len, labels)), size, size)
    return _checked_split(np.concatenate(images), np.concatenate(labels), len(class_names), split)

  return Dataset(read(config.train_split), read(config.eval_split), class_names)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], Dataset]] = {
    'digits': load_digits,
    'tfds': load_tfds,
}


def load(config: ml_collections.ConfigDict) -> Dataset:
  """Loads the dataset described by a `config.data` section (source 'digits' or 'tfds')."""
  return SOURCES[config.source](config)
