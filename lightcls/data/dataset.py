"""The data types every source returns: `Dataset` of `Split`s (decoded uint8 pixels in host memory) or
`Records` (undecoded files, bytes or arrays of any size, with labels and optional bounding boxes) that
`pipeline.decoded` turns into `Split`s once."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray  # (N,) int32

  def __len__(self) -> int:
    return len(self.labels)


Box = tuple[int, int, int, int]  # x_min, y_min, x_max, y_max in pixels; the crop is image[y_min:y_max, x_min:x_max]


@dataclasses.dataclass(frozen=True)
class Record:
  """One undecoded example."""
  image: str | bytes | np.ndarray  # a file path, the encoded file bytes, or decoded (H, W[, C]) pixels
  label: int
  name: str                        # what reports call it: the file path, archive member or tfds id
  box: Box | None = None           # the object's bounding box, where the dataset has one


@dataclasses.dataclass(frozen=True)
class Records:
  """Undecoded examples of one split, read in order. `read(indices)` yields the records at the given
  positions (all when None) in increasing order; the labels are known without reading any image."""
  labels: np.ndarray  # (N,) int32
  read: Callable[[np.ndarray | None], Iterator[Record]]

  def __len__(self) -> int:
    return len(self.labels)

  def __iter__(self) -> Iterator[Record]:
    return self.read(None)

  @classmethod
  def of(cls, records: Sequence[Record]) -> Records:
    """Records already listed in memory (folders, archives)."""
    records = tuple(records)

    def read(indices):
      return iter(records) if indices is None else (records[i] for i in indices)
    return cls(np.array([r.label for r in records], np.int32), read)

  def subset(self, indices: Iterable[int]) -> Records:
    """The records at `indices` (sorted), e.g. a validation split carved from train."""
    indices = np.sort(np.asarray(list(indices), np.int64))
    return Records(self.labels[indices], lambda more: self.read(indices if more is None else indices[more]))


@dataclasses.dataclass(frozen=True)
class Dataset:
  train: Split | Records
  eval: Split | Records
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def checked_split(images: np.ndarray, labels: np.ndarray, num_classes: int, what: str) -> Split:
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
  if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and (labels.min() < 0 or
                                                                       labels.max() >= num_classes)):
    raise ValueError(f'{what} labels must be integers in [0, {num_classes}); '
                     f'got {labels.dtype} in [{labels.min()}, {labels.max()}]')
  return Split(images, labels.astype(np.int32))
