import gzip
import struct

import numpy as np
import pytest

from configs import default
from lightcls.config_utils import ConfigError
from lightcls.data import idx, sources

DTYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
               np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _idx_bytes(array: np.ndarray) -> bytes:
  """The IDX encoding (LeCun's MNIST page): 0, 0, dtype code, ndim, big-endian uint32 dims, big-endian data."""
  header = bytes([0, 0, DTYPE_CODES[array.dtype], array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def _write(path, array: np.ndarray, compress: bool = True) -> None:
  data = _idx_bytes(array)
  path.write_bytes(gzip.compress(data) if compress else data)


def _mnist_dir(directory, train: int = 12, test: int = 5, compress: bool = True):
  """A miniature MNIST-format directory; image i of a split is filled with value i, its label i % 10."""
  directory.mkdir(parents=True, exist_ok=True)
  for prefix, n in (('train', train), ('t10k', test)):
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 28, 28))
    suffix = '.gz' if compress else ''
    _write(directory / f'{prefix}-images-idx3-ubyte{suffix}', np.ascontiguousarray(images), compress)
    _write(directory / f'{prefix}-labels-idx1-ubyte{suffix}', np.arange(n, dtype=np.uint8) % 10, compress)
  return directory


def _config(directory, **overrides):
  config = default.get_config().data
  config.update(source='idx', data_dir=str(directory), **overrides)
  return config


@pytest.mark.parametrize('dtype', list(DTYPE_CODES))
@pytest.mark.parametrize('compress', [True, False])
def test_read_idx_returns_the_written_array_in_native_byte_order(tmp_path, dtype, compress):
  array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
  _write(tmp_path / 'a.idx', array, compress)
  read = idx.read_idx(str(tmp_path / 'a.idx'))
  assert read.dtype == dtype and read.dtype.isnative
  np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize('compress', [True, False])
def test_load_idx_reads_both_splits_in_file_order(tmp_path, compress):
  data = idx.load_idx(_config(_mnist_dir(tmp_path / 'mnist', compress=compress)))
  assert data.train.images.shape == (12, 28, 28, 1) and data.train.images.dtype == np.uint8
  assert data.eval.images.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(data.train.images[:, 3, 3, 0], np.arange(12))
  np.testing.assert_array_equal(data.train.labels, np.arange(12) % 10)
  assert data.train.labels.dtype == np.int32


def test_class_names_are_digits_unless_the_directory_is_fashion_mnist(tmp_path):
  assert idx.load_idx(_config(_mnist_dir(tmp_path / 'mnist'))).class_names == tuple('0123456789')
  fashion = idx.load_idx(_config(_mnist_dir(tmp_path / 'Fashion-MNIST' / 'raw')))
  assert fashion.class_names[0] == 'T-shirt/top' and fashion.class_names[9] == 'Ankle boot'


def test_missing_file_names_it_and_the_package_that_provides_the_default(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  (directory / 't10k-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(FileNotFoundError, match=r't10k-labels-idx1-ubyte\[\.gz\] not found.*apt-get install '
                                              'dataset-fashion-mnist'):
    idx.load_idx(_config(directory))


def test_wrong_magic_number_is_an_error_naming_the_file(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  (directory / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(b'\x89PNG\r\n\x1a\n' + bytes(100)))
  with pytest.raises(ValueError, match=r'train-images-idx3-ubyte.gz is not an IDX file: .*89504e47'):
    idx.load_idx(_config(directory))


def test_truncated_file_is_an_error(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  data = _idx_bytes(np.zeros((12, 28, 28), np.uint8))
  (directory / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(data[:-100]))
  with pytest.raises(ValueError, match='truncated or damaged'):
    idx.load_idx(_config(directory))


def test_corrupt_gzip_is_an_error_naming_the_file(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  path = directory / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(path.read_bytes()[:20])
  with pytest.raises(ValueError, match='train-labels-idx1-ubyte.gz: corrupt gzip'):
    idx.load_idx(_config(directory))


def test_image_and_label_counts_must_match(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  _write(directory / 'train-labels-idx1-ubyte.gz', np.zeros(11, np.uint8))
  with pytest.raises(ValueError, match='holds 12 images but .* holds 11 labels'):
    idx.load_idx(_config(directory))


def test_labels_out_of_range_are_an_error(tmp_path):
  directory = _mnist_dir(tmp_path / 'mnist')
  _write(directory / 't10k-labels-idx1-ubyte.gz', np.array([0, 1, 2, 10, 3], np.uint8))
  with pytest.raises(ValueError, match=r'labels must be in \[0, 10\); got \[0, 10\]'):
    idx.load_idx(_config(directory))


def test_unknown_split_name_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match='eval_split'):
    idx.load_idx(_config(_mnist_dir(tmp_path / 'mnist'), eval_split='validation'))


def test_real_fashion_mnist_from_the_debian_package_has_60000_and_10000_balanced_images():
  config = default.get_config().data
  config.source = 'idx'  # data_dir None: /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)
  data = sources.load(config)
  assert data.train.images.shape == (60000, 28, 28, 1) and data.eval.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(data.train.labels, minlength=10), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(data.eval.labels, minlength=10), [1000] * 10)
  assert data.class_names == idx.FASHION_MNIST_CLASSES
  # The first training image is an ankle boot (label 9) on a black background, as in the published file.
  assert data.train.labels[0] == 9 and data.train.images[0, 0, 0, 0] == 0 and data.train.images[0].max() > 200
