import numpy as np
import pytest

from configs import default
from lightcls.data import sources


def test_digits_is_a_stratified_80_20_split_of_the_1797_images():
  data = sources.load_digits(default.get_config().data)
  assert len(data.train) == 1437 and len(data.eval) == 360
  assert data.train.images.shape[1:] == (8, 8, 1) and data.train.images.dtype == np.uint8
  assert data.train.images.max() == 255
  # Stratified: each class has (about) the same share in both parts.
  train_share = np.bincount(data.train.labels) / len(data.train)
  eval_share = np.bincount(data.eval.labels) / len(data.eval)
  np.testing.assert_allclose(train_share, eval_share, atol=0.005)


def test_from_arrays_adds_the_channel_axis_of_grayscale_images():
  x = np.zeros((4, 6, 6), np.uint8)
  data = sources.from_arrays(x, np.array([0, 1, 2, 0]), x[:2], np.array([1, 2]))
  assert data.train.images.shape == (4, 6, 6, 1) and data.num_classes == 3


@pytest.mark.parametrize('images,labels,message', [
    (np.zeros((2, 4, 4, 3), np.float32), [0, 1], 'uint8'),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 5], r'\[0, 2\)'),
    (np.zeros((2, 4, 4, 3), np.uint8), [0], r'shape \(2,\)'),
    (np.zeros((2, 4, 4, 4), np.uint8), [0, 1], 'C in'),
])
def test_from_arrays_names_what_is_wrong(images, labels, message):
  with pytest.raises(ValueError, match=message):
    sources.from_arrays(images, np.array(labels), images, np.array(labels), class_names=['a', 'b'])
