"""IDX files, the format of MNIST and Fashion-MNIST (optionally gzip-compressed), read with numpy alone.

An IDX file is: two zero bytes, a dtype code, the number of dimensions; one big-endian uint32 per dimension;
then the values, big-endian, in row-major order.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib

import ml_collections
import numpy as np

from lightcls.config_utils import ConfigError
from lightcls.data.dataset import Dataset, Split

log = logging.getLogger(__name__)

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'  # Debian/Ubuntu package dataset-fashion-mnist
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')
DIGIT_CLASSES = tuple(str(d) for d in range(10))
SPLIT_PREFIXES = {'train': 'train', 'test': 't10k'}  # split name -> file name prefix

_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}
_GZIP_MAGIC = b'\x1f\x8b'


def _file_bytes(path: str) -> bytes:
  """The file's contents, decompressed when it is gzip (told by its magic bytes, not its name)."""
  with open(path, 'rb') as f:
    data = f.read()
  if not data.startswith(_GZIP_MAGIC):
    return data
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as error:
    raise ValueError(f'{path}: corrupt gzip data ({error}); download the file again.') from None


def read_idx(path: str) -> np.ndarray:
  """The array stored in an IDX file (plain or .gz), in native byte order."""
  data = _file_bytes(path)
  if len(data) < 4 or data[:2] != b'\0\0' or data[2] not in _DTYPES:
    raise ValueError(f'{path} is not an IDX file: its magic number is {data[:4].hex() or "missing"}, expected '
                     f'0000 then a dtype code ({", ".join(f"{c:02x}" for c in _DTYPES)}) and the number of '
                     'dimensions.')
  ndim, dtype = data[3], np.dtype(_DTYPES[data[2]])
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f'{path}: truncated header ({len(data)} bytes, {ndim} dimensions need {header}).')
  shape = struct.unpack(f'>{ndim}I', data[4:header])
  size = math.prod(shape) * dtype.itemsize
  if len(data) - header != size:
    raise ValueError(f'{path}: the header promises {shape} values of {dtype.name} ({size} bytes) but '
                     f'{len(data) - header} bytes follow it; the file is truncated or damaged.')
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


def _idx_path(directory: str, name: str) -> str:
  """`name`.gz or `name` in `directory`; a missing file is an error saying where the default comes from."""
  for candidate in (name + '.gz', name):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f'{os.path.join(directory, name)}[.gz] not found. Set config.data.data_dir to the '
                          f'directory of the IDX files; the default {DEFAULT_DIR} is provided by '
                          '`apt-get install dataset-fashion-mnist`.')


def read_split(directory: str, prefix: str, num_classes: int) -> Split:
  """<prefix>-images-idx3-ubyte and <prefix>-labels-idx1-ubyte as a Split of (N, H, W, 1) uint8 images."""
  images_path = _idx_path(directory, f'{prefix}-images-idx3-ubyte')
  labels_path = _idx_path(directory, f'{prefix}-labels-idx1-ubyte')
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f'{images_path}: expected (N, H, W) uint8 images; got {images.shape} {images.dtype}.')
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{labels_path}: expected (N,) integer labels; got {labels.shape} {labels.dtype}.')
  if len(images) != len(labels):
    raise ValueError(f'{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels.')
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'{labels_path}: labels must be in [0, {num_classes}); got [{labels.min()}, '
                     f'{labels.max()}].')
  return Split(images[..., None], labels.astype(np.int32))


def class_names(directory: str) -> tuple[str, ...]:
  """Fashion-MNIST's names for a directory whose path says so, else the digits '0'..'9'."""
  return FASHION_MNIST_CLASSES if 'fashion' in os.path.abspath(directory).lower() else DIGIT_CLASSES


def _prefix(key: str, split: str) -> str:
  if split not in SPLIT_PREFIXES:
    raise ConfigError(f'config.data.{key}={split!r}: IDX splits are {sorted(SPLIT_PREFIXES)}.')
  return SPLIT_PREFIXES[split]


def load_idx(config: ml_collections.ConfigDict) -> Dataset:
  """MNIST-format train/t10k IDX files from config.data_dir (default: Fashion-MNIST of the Debian package)."""
  directory = config.data_dir or DEFAULT_DIR
  names = class_names(directory)
  train = read_split(directory, _prefix('train_split', config.train_split or 'train'), len(names))
  eval_ = read_split(directory, _prefix('eval_split', config.eval_split or 'test'), len(names))
  log.info('%s: %d train and %d eval images of %s', directory, len(train), len(eval_), train.images.shape[1:])
  return Dataset(train, eval_, names)
