"""Host side of the input pipeline: resize once, then shuffle by (seed, epoch), batch and shard per process.

Batches are numpy dicts of this process's rows of the global batch; train.py turns them into global
jax.Arrays sharded over the ('data',) mesh axis. Random augmentation happens later, on the device.
"""
from __future__ import annotations

import math
from typing import Iterator

import jax
import numpy as np

from lightcls.data.sources import Dataset, Split

Batch = dict[str, np.ndarray]


def resized(split: Split, size: int) -> Split:
  """The split with every image resized to size x size (bilinear, antialiased when shrinking)."""
  if split.images.shape[1:3] == (size, size):
    return split
  out = []
  for chunk in np.array_split(split.images, max(1, len(split.images) // 512)):
    shape = (len(chunk), size, size, chunk.shape[-1])
    out.append(np.asarray(jax.image.resize(chunk.astype(np.float32), shape, 'bilinear', antialias=True)))
  images = np.clip(np.round(np.concatenate(out)), 0, 255).astype(np.uint8)
  return Split(images, split.labels)


def prepared(dataset: Dataset, size: int) -> Dataset:
  return Dataset(resized(dataset.train, size), resized(dataset.eval, size), dataset.class_names)


def _local_rows(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  per_process = len(indices) // process_count
  return indices[process_index * per_process:(process_index + 1) * per_process]


def train_batches(split: Split, batch_size: int, seed: int, epoch: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[Batch]:
  """This process's share of each full global batch of one epoch; the order depends on (seed, epoch) only."""
  order = np.random.default_rng([seed, epoch]).permutation(len(split))
  for step in range(len(split) // batch_size):
    rows = _local_rows(order[step * batch_size:(step + 1) * batch_size], process_index, process_count)
    yield {'image': split.images[rows], 'label': split.labels[rows]}


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """Every example exactly once; the last batch is padded to full size and `mask` marks the real rows."""
  n = len(split)
  for step in range(math.ceil(n / batch_size)):
    positions = _local_rows(np.arange(step * batch_size, (step + 1) * batch_size), process_index, process_count)
    mask = positions < n
    rows = np.where(mask, positions, 0)
    yield {'image': split.images[rows], 'label': split.labels[rows], 'mask': mask}
