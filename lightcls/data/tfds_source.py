"""TensorFlow Datasets as a source of `Records`: each example's decoded uint8 pixels at its own size (the
pipeline resizes every source the same way), its label, a stable name and the object's box where the dataset
annotates one. The labels of a split are read up front without decoding any image.

TensorFlow is imported inside the functions only, so the core imports without it.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator

import ml_collections
import numpy as np

from lightcls.config_utils import ConfigError
from lightcls.data.dataset import Box, Dataset, Record, Records

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """Where a tfds dataset keeps what a `Record` needs; keys are those of `builder.info.features`."""
  train_split: str = 'train'
  eval_split: str = 'test'
  image_key: str = 'image'
  label_key: str = 'label'
  name_key: str | None = None             # a per-example file name or id, used when the version has it
  box_key: tuple[str, ...] | None = None  # path to a BBoxFeature (in a Sequence: the first box counts)


# Facts from the builders in tensorflow_datasets (image_classification/ and datasets/).
TFDS_DATASETS: dict[str, TfdsSpec] = {
    'cars196': TfdsSpec(name_key='id', box_key=('bbox',)),
    'stanford_dogs': TfdsSpec(name_key='image/filename', box_key=('objects', 'bbox')),
    'cifar10': TfdsSpec(name_key='id'),
    'cifar100': TfdsSpec(name_key='id'),
    'fashion_mnist': TfdsSpec(),
    # 'head_bbox' frames only the head, not the animal, so it is no object box.
    'oxford_iiit_pet': TfdsSpec(name_key='file_name'),
    # train and validation are 10 images per class each; the usual protocol trains on both.
    'oxford_flowers102': TfdsSpec(train_split='train+validation', name_key='file_name'),
    'dtd': TfdsSpec(train_split='train+validation', name_key='file_name'),  # partition 1 of 10
    'caltech101': TfdsSpec(name_key='image/file_name'),  # 30 train images per class, the rest test
    'svhn_cropped': TfdsSpec(name_key='id'),
    'food101': TfdsSpec(eval_split='validation'),  # tfds names the official test set 'validation'
    # The default config 'tfds' also has 'validation'; the standard-partN-120k configs have train/test only.
    'sun397': TfdsSpec(name_key='file_name'),
}


def load_tfds(config: ml_collections.ConfigDict) -> Dataset:
  """The tfds dataset `config.name` (with `data_dir`, `manual_dir`), prepared if needed, as lazily read
  `Records`; `train_split`/`eval_split` of None mean the dataset's own (`TFDS_DATASETS`, else train/test)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  tf.config.set_visible_devices([], 'GPU')  # TF must not grab accelerator memory JAX needs
  builder = _builder(config.name, config.data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=config.manual_dir))
  spec = _spec(config.name, builder)
  class_names = tuple(builder.info.features[spec.label_key].names)
  return Dataset(_split_records(builder, spec, config.train_split or spec.train_split),
                 _split_records(builder, spec, config.eval_split or spec.eval_split), class_names)


def pixel_box(normalized: np.ndarray, height: int, width: int) -> Box | None:
  """tfds' normalized (ymin, xmin, ymax, xmax) as a pixel `Box`; None when it encloses no pixel. Builders
  store pixel coordinates divided by the image side, so rounding gives back the annotated pixels."""
  ymin, xmin, ymax, xmax = np.asarray(normalized, np.float64)
  x_min, x_max = np.clip(np.round([xmin * width, xmax * width]), 0, width).astype(int)
  y_min, y_max = np.clip(np.round([ymin * height, ymax * height]), 0, height).astype(int)
  return (int(x_min), int(y_min), int(x_max), int(y_max)) if x_max > x_min and y_max > y_min else None


def _builder(name: str, data_dir: str | None) -> Any:
  import tensorflow_datasets as tfds
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    # tfds' message lists every dataset it has; its spelling hint is the useful line.
    hint = next((line for line in str(e).splitlines() if line.startswith('Did you mean')), '')
    raise ConfigError(f'config.data.name={name!r} is not a tfds dataset. {hint} '
                      f'Datasets with known splits and features: {", ".join(TFDS_DATASETS)}') from None


def _spec(name: str, builder: Any) -> TfdsSpec:
  """The table's entry (any config or version of it), else the builder's supervised keys, else the
  usual 'image' and 'label' features."""
  known = TFDS_DATASETS.get(name.split(':')[0].split('/')[0])
  if known is not None:
    return known
  keys = builder.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return TfdsSpec(image_key=keys[0], label_key=keys[1])
  if {'image', 'label'} <= set(builder.info.features.keys()):
    return TfdsSpec()
  raise ConfigError(f'tfds dataset {name!r} has neither (image, label) supervised keys nor image and label '
                    f'features; datasets with known features: {", ".join(TFDS_DATASETS)}')


def _undecoded(builder: Any, split: str) -> Any:
  """The split's examples in their stored order with every image still encoded: labels, names and boxes
  are read without paying for decoding, and only the images asked for are decoded."""
  import tensorflow_datasets as tfds
  skip = {key: tfds.decode.SkipDecoding() for key, feature in builder.info.features.items()
          if isinstance(feature, tfds.features.Image)}
  try:
    return builder.as_dataset(split=split, shuffle_files=False, decoders=skip)
  except ValueError as e:  # an unknown split name or bad slicing syntax
    raise ConfigError(f'tfds dataset {builder.name!r} has no split {split!r}: {e}') from None


def _split_records(builder: Any, spec: TfdsSpec, split: str) -> Records:
  labels = _labels(builder, spec, split)
  log.info('%s/%s: %d examples in %d classes', builder.name, split, len(labels), len(np.unique(labels)))
  return Records(labels, lambda indices: _records(builder, spec, split, len(labels), indices))


def _labels(builder: Any, spec: TfdsSpec, split: str) -> np.ndarray:
  batches = _undecoded(builder, split).map(lambda example: example[spec.label_key]).batch(8192)
  return np.concatenate([np.zeros(0, np.int32), *batches.as_numpy_iterator()]).astype(np.int32)


def _records(builder: Any, spec: TfdsSpec, split: str, count: int, indices: np.ndarray | None
             ) -> Iterator[Record]:
  """The records at `indices` (sorted; all when None). The stored order is the labels' order; examples
  before the last index are read but only the wanted ones are decoded."""
  import tensorflow as tf
  examples = _undecoded(builder, split).enumerate()
  if indices is not None:
    if len(indices) == 0:
      return
    wanted = np.zeros(count, bool)
    wanted[indices] = True
    examples = examples.take(int(indices[-1]) + 1).filter(lambda i, _: tf.gather(wanted, i))
  features = builder.info.features
  name_key = spec.name_key if spec.name_key in features.keys() else None

  def fields(i, example):
    out = {'index': i, 'image': features[spec.image_key].decode_example(example[spec.image_key]),
           'label': example[spec.label_key]}
    if name_key:
      out['name'] = example[name_key]
    if spec.box_key:
      out['boxes'] = tf.reshape(_value_at(example, spec.box_key), (-1, 4))
    return out

  prefix = f'{builder.name}/{split}'
  for e in examples.map(fields, num_parallel_calls=tf.data.AUTOTUNE).prefetch(8).as_numpy_iterator():
    name = f'{prefix}/{e["index"]}' + (f':{e["name"].decode()}' if name_key else '')
    box = pixel_box(e['boxes'][0], *e['image'].shape[:2]) if spec.box_key and len(e['boxes']) else None
    yield Record(e['image'], int(e['label']), name, box)


def _value_at(example: dict, path: tuple[str, ...]) -> Any:
  for key in path:
    example = example[key]
  return example
