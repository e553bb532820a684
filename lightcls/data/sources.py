"""Dataset sources by `config.data.source` name; each returns a `dataset.Dataset`.

TensorFlow is imported only inside the tfds source's functions, so the core runs where TF is absent.
"""
from __future__ import annotations

from typing import Callable, Sequence

import ml_collections
import numpy as np

from lightcls.data import cars, folders, idx, tfds_source
from lightcls.data.dataset import Dataset, checked_split


def from_arrays(train_images: np.ndarray, train_labels: np.ndarray, eval_images: np.ndarray,
                eval_labels: np.ndarray, class_names: Sequence[str] | None = None) -> Dataset:
  """An in-memory dataset from numpy arrays (for notebooks and tests); validates shapes and ranges."""
  num_classes = len(class_names) if class_names else int(max(np.max(train_labels), np.max(eval_labels))) + 1
  names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
  return Dataset(checked_split(train_images, train_labels, num_classes, 'train'),
                 checked_split(eval_images, eval_labels, num_classes, 'eval'), names)


def load_digits(config: ml_collections.ConfigDict) -> Dataset:
  """scikit-learn's bundled 1,797 handwritten 8x8 digits; stratified 80/20 split with a fixed seed."""
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values are 0..16
  train_x, eval_x, train_y, eval_y = model_selection.train_test_split(
      pixels, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
  return from_arrays(train_x, train_y, eval_x, eval_y, [str(d) for d in range(10)])


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], Dataset]] = {
    'digits': load_digits,
    'tfds': tfds_source.load_tfds,
    'folder': folders.load_folder,
    'idx': idx.load_idx,
    'cars': cars.load_cars,
}


def load(config: ml_collections.ConfigDict) -> Dataset:
  """Loads the dataset described by a `config.data` section (source: a key of SOURCES)."""
  return SOURCES[config.source](config)
