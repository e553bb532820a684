"""Host side of the input pipeline: decode once, resize, cache uint8 pixels, then shuffle by (seed, epoch),
batch and shard per process.

Batches are numpy dicts of this process's rows of the global batch; train.py turns them into global
jax.Arrays sharded over the ('data',) mesh axis. Random augmentation happens later, on the device.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import tempfile
import threading
from typing import Any, Iterator

import ml_collections
import numpy as np
from PIL import Image

from lightcls.data import decode, progress
from lightcls.data.dataset import Box, Dataset, Records, Split

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
RESIZE_MODES = ('stretch', 'center_crop')


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How one split's images become cached pixels (see the data section of configs/default.py)."""
  size: int
  resize: str = 'stretch'          # stretch | center_crop (keep the aspect ratio, crop the middle square)
  grayscale: bool = False
  crop_to_boxes: bool = False      # training only: the object's bounding box alone ...
  erase_background: bool = False   # ... or the box kept in place on a white image of the original size


def preprocess_options(config: ml_collections.ConfigDict, train: bool) -> Preprocess:
  """The preprocessing of the train or eval split; bounding boxes are used for training images only, since
  a deployed model sees whole photos (seed 000, section 4.2.5)."""
  return Preprocess(config.image_size, config.train_resize if train else config.eval_resize, config.grayscale,
                    train and config.crop_to_boxes, train and config.erase_background)


def resized(image: np.ndarray, size: int, mode: str = 'stretch') -> np.ndarray:
  """(H, W, C) uint8 -> (size, size, C): bilinear, antialiased when shrinking (PIL's filter support scales
  with the reduction, as torchvision's antialias=True)."""
  height, width, channels = image.shape
  if mode == 'center_crop':  # shorter side to `size`, then the central square
    scale = size / min(height, width)
    height, width = max(size, round(height * scale)), max(size, round(width * scale))
  else:
    height = width = size
  if (height, width) != image.shape[:2]:
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    image = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR)).reshape(height, width, channels)
  top, left = (height - size) // 2, (width - size) // 2
  return image[top:top + size, left:left + size]


def _clipped(box: Box, height: int, width: int) -> Box | None:
  x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
  return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def boxed(image: np.ndarray, box: Box | None, erase_background: bool) -> np.ndarray:
  """The bounding box's pixels alone, or (erase_background) in place on a white image of the original size."""
  box = box and _clipped(box, *image.shape[:2])
  if box is None:
    return image
  x0, y0, x1, y1 = box
  if not erase_background:
    return image[y0:y1, x0:x1]
  out = np.full_like(image, 255)
  out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
  return out


def preprocessed(image: np.ndarray, box: Box | None, options: Preprocess) -> np.ndarray:
  """One decoded image as it is cached: box crop (if asked), resize, grayscale."""
  if options.crop_to_boxes:
    image = boxed(image, box, options.erase_background)
  if options.grayscale:
    image = decode.with_channels(image, grayscale=True)
  return resized(image, options.size, options.resize)


@dataclasses.dataclass
class SplitReport:
  """What decoding one split did: every skipped file is listed with the reason."""
  examples: int = 0
  decoded: int = 0
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  per_class: list[int] = dataclasses.field(default_factory=list)


def _check_label(label: int, num_classes: int, name: str) -> None:
  if not 0 <= label < num_classes:
    raise ValueError(f'{name}: label {label} is outside the {num_classes} classes [0, {num_classes}); '
                     'check the annotations or the class list of the source.')


def _gray(image: str | bytes | np.ndarray, options: Preprocess) -> bool:
  """Files become RGB (a folder may mix gray and colour photos) unless grayscale is asked for; decoded
  one-channel arrays (tfds mnist, fashion_mnist) stay one channel, as every image of such a dataset is."""
  one_channel = isinstance(image, np.ndarray) and (image.ndim == 2 or image.shape[-1] == 1)
  return options.grayscale or one_channel


def decoded(records: Records, options: Preprocess, num_classes: int, what: str) -> tuple[Split, SplitReport]:
  """Decodes and preprocesses every record once. Unreadable files are skipped, counted and listed in the
  report (never a crash mid-run, never a silent drop); a bad label is an error naming the file."""
  report = SplitReport(examples=len(records))
  images, labels = [], []
  max_side = options.size if options.resize == 'stretch' and not options.crop_to_boxes else None
  with progress.ProgressBar(f'decoding {what}', len(records)) as bar:
    for i, record in enumerate(records):
      _check_label(record.label, num_classes, record.name)
      try:
        image = decode.decode_image(record.image, record.name, _gray(record.image, options), max_side)
      except decode.UnreadableImage as error:
        report.skipped.append({'name': record.name, 'reason': error.reason})
        log.warning('Skipped %s', error)
      else:
        images.append(preprocessed(image, record.box, options))
        labels.append(record.label)
      bar.update(i + 1)
  if not images:
    raise ValueError(f'{what}: none of the {len(records)} images could be read; first: {report.skipped[:3]}')
  report.decoded = len(images)
  return Split(np.stack(images), np.asarray(labels, np.int32)), report


def resized_split(split: Split, options: Preprocess) -> Split:
  """An already decoded split (arrays, IDX) at the configured size and channels; boxes do not apply."""
  channels = 1 if options.grayscale else split.images.shape[-1]
  if split.images.shape[1:] == (options.size, options.size, channels):
    return split
  images = np.stack([preprocessed(image, None, options) for image in split.images])
  return Split(images, split.labels)


def _with_counts(split: Split, report: SplitReport, num_classes: int) -> SplitReport:
  report.per_class = np.bincount(split.labels, minlength=num_classes).tolist()
  if not report.examples:
    report.examples = report.decoded = len(split)
  return report


def _empty_classes_error(report: SplitReport, class_names: tuple[str, ...], records: Records) -> str | None:
  empty = [i for i, n in enumerate(report.per_class) if n == 0 and np.any(records.labels == i)]
  if not empty:
    return None
  names = [class_names[i] for i in empty]
  unreadable = [s['name'] for s in report.skipped][:5]
  return (f'class(es) {names} have no readable image left in the training split (all their files were '
          f'skipped, e.g. {unreadable}); replace or remove the broken files.')


def prepared_split(split: Split | Records, options: Preprocess, class_names: tuple[str, ...],
                   what: str, cache: DiskCache | None = None) -> tuple[Split, SplitReport]:
  """A split as cached uint8 pixels at the configured size, with its report."""
  num_classes = len(class_names)
  if isinstance(split, Split):
    return resized_split(split, options), _with_counts(split, SplitReport(), num_classes)
  if cache is not None and (hit := cache.read(what, split, options)) is not None:
    return hit
  pixels, report = decoded(split, options, num_classes, what)
  report = _with_counts(pixels, report, num_classes)
  if what == 'train' and (error := _empty_classes_error(report, class_names, split)):
    raise ValueError(error)
  if cache is not None:
    cache.write(what, split, options, pixels, report)
  return pixels, report


class DiskCache:
  """Decoded splits saved as .npy files under `directory`, keyed by the source config, the split and its
  labels, and the preprocessing; later runs (sweeps, resumes) load them instead of decoding again.
  Files are written to a temporary name and renamed, so a killed run never leaves a half file that is trusted."""

  def __init__(self, directory: str, source: dict[str, Any]):
    self.directory, self.source = directory, source

  def _path(self, what: str, records: Records, options: Preprocess) -> str:
    key = json.dumps([self.source, what, dataclasses.asdict(options)], sort_keys=True).encode()
    digest = hashlib.sha256(key + records.labels.tobytes()).hexdigest()[:16]
    return os.path.join(self.directory, f'{what}-{options.size}px-{digest}')

  def read(self, what: str, records: Records, options: Preprocess) -> tuple[Split, SplitReport] | None:
    path = self._path(what, records, options)
    if not os.path.exists(path + '.json'):
      return None
    with open(path + '.json') as f:
      report = SplitReport(**json.load(f))
    split = Split(np.load(path + '.images.npy', mmap_mode='r'), np.load(path + '.labels.npy'))
    log.info('%s: %d decoded images from the cache %s', what, len(split), path)
    return split, report

  def write(self, what: str, records: Records, options: Preprocess, split: Split, report: SplitReport) -> None:
    path = self._path(what, records, options)
    os.makedirs(self.directory, exist_ok=True)
    for suffix, array in (('.images.npy', split.images), ('.labels.npy', split.labels)):
      _atomic_write(path + suffix, lambda f, a=array: np.save(f, a))
    _atomic_write(path + '.json', lambda f: f.write(json.dumps(dataclasses.asdict(report)).encode()))


def _atomic_write(path: str, write) -> None:
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
    write(f)
  os.replace(f.name, path)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, holdout) indices: `fraction` of every class (at least one example of each class with two or
  more) held out at random with `seed`."""
  rng = np.random.default_rng(seed)
  held = []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    count = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
    held.append(members[:count])
  holdout = np.sort(np.concatenate(held))
  return np.setdiff1d(np.arange(len(labels)), holdout), holdout


def subset(split: Split | Records, indices: np.ndarray) -> Split | Records:
  return split.subset(indices) if isinstance(split, Records) else Split(split.images[indices],
                                                                        split.labels[indices])


def with_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
  """The official eval split, or (fraction > 0) a stratified random part of train in its place."""
  if not fraction:
    return dataset
  train, holdout = stratified_holdout(dataset.train.labels, fraction, seed)
  return Dataset(subset(dataset.train, train), subset(dataset.train, holdout), dataset.class_names)


def prepared(dataset: Dataset, config: ml_collections.ConfigDict) -> tuple[Dataset, dict[str, Any]]:
  """Decoded, preprocessed and cached splits of `dataset` per a `config.data` section, and the data report
  (per split: examples, decoded, skipped files with reasons, images per class)."""
  dataset = with_validation(dataset, config.val_fraction, config.val_seed)
  cache = DiskCache(config.cache_dir, _source_key(config)) if config.cache_dir else None
  train, train_report = prepared_split(dataset.train, preprocess_options(config, True), dataset.class_names,
                                       'train', cache)
  eval_, eval_report = prepared_split(dataset.eval, preprocess_options(config, False), dataset.class_names,
                                      'eval', cache)
  report = {'class_names': list(dataset.class_names), 'train': dataclasses.asdict(train_report),
            'eval': dataclasses.asdict(eval_report)}
  skipped = len(train_report.skipped) + len(eval_report.skipped)
  if skipped:
    log.warning('%d unreadable file(s) skipped; listed in data_report.json.', skipped)
  return Dataset(train, eval_, dataset.class_names), report


def _source_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keys that decide which files a source reads (not how they are preprocessed)."""
  return {k: config.get(k) for k in ('source', 'name', 'data_dir', 'manual_dir', 'train_split', 'eval_split',
                                     'val_fraction', 'val_seed')}


def _local_rows(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  per_process = len(indices) // process_count
  return indices[process_index * per_process:(process_index + 1) * per_process]


def train_batches(split: Split, batch_size: int, seed: int, epoch: int, process_index: int = 0,
                  process_count: int = 1, start: int = 0) -> Iterator[Batch]:
  """This process's share of each full global batch of one epoch, from its `start`th batch on (a run resumed
  mid-epoch); the order depends on (seed, epoch) only."""
  order = np.random.default_rng([seed, epoch]).permutation(len(split))
  for step in range(start, len(split) // batch_size):
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


def prefetched(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Runs `iterator` on a background thread, `size` items ahead, so gathering the next batch (and copying
  it to the device) overlaps the current step. Errors surface in the consumer."""
  items: queue.Queue = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():  # a consumer that stopped early must not leave this thread blocked
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
      put(done)
    except BaseException as error:  # noqa: BLE001 (re-raised in the consumer)
      put(error)

  producer = threading.Thread(target=produce, daemon=True)
  producer.start()
  try:
    while (item := items.get()) is not done:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    # Closed early (a break, an error, a preemption): wait for the item being made, so that no thread is
    # still inside JAX when the process exits (the interpreter's shutdown can abort under it).
    stop.set()
    producer.join()
