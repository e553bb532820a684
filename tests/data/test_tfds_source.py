"""The tfds source on mocked datasets: examples are random but follow each dataset's real feature spec
(image shapes, class lists, boxes), and pass through tfds' own serialization and decoding as on disk."""
import contextlib
import zlib

import numpy as np
import pytest

from configs import default
from lightcls.config_utils import ConfigError
from lightcls.data import sources, tfds_source

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')
from tensorflow_datasets.testing.mocking import RandomFakeGenerator  # noqa: E402

NUM_EXAMPLES = 12


class _ValidBoxes(RandomFakeGenerator):
  """tfds' fake examples, with each box's min and max sorted: its raw draws break the encoder's min <= max."""

  def _generate_random_obj(self, feature, tensor_info, rng):
    value = super()._generate_random_obj(feature, tensor_info, rng)
    if isinstance(feature, tfds.features.BBoxFeature):
      y, x = np.sort(value[..., 0::2], -1), np.sort(value[..., 1::2], -1)
      value = np.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], -1)
    return value


@contextlib.contextmanager
def mocked_tfds():
  """Mocked tfds; yields the split names read. Each split has its own examples, the same on every read."""
  splits = []

  def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    splits.append(split)
    features = builder.info.features
    examples = _ValidBoxes(features, NUM_EXAMPLES, seed=zlib.crc32(split.encode()))
    serialized = tf.data.Dataset.from_generator(lambda: map(features.serialize_example, examples),
                                                output_signature=tf.TensorSpec((), tf.string))
    return serialized.map(lambda s: features.deserialize_example(s, decoders=decoders))

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    yield splits


def tfds_config(name, **overrides):
  config = default.get_config().data
  config.update(source='tfds', name=name, **overrides)
  return config


def loaded(name, **overrides):
  with mocked_tfds() as splits:
    data = sources.load(tfds_config(name, **overrides))
    records = list(data.train), list(data.eval)
  return data, records, splits


def raw_examples(name, split):
  """The mock's examples as tfds itself decodes them, for comparison."""
  with mocked_tfds():
    return list(tfds.builder(name).as_dataset(split=split).as_numpy_iterator())


def test_cifar10_gives_labels_up_front_and_uint8_images_with_tfds_ids():
  data, (train, test), splits = loaded('cifar10')
  assert splits[-2:] == ['train', 'test']
  assert data.class_names == tuple(str(i) for i in range(10))  # the mock's names; real cifar10 names its classes
  assert data.train.labels.shape == (NUM_EXAMPLES,) and data.train.labels.dtype == np.int32
  assert 0 <= data.train.labels.min() and data.train.labels.max() < 10
  assert [r.label for r in train] == list(data.train.labels)
  assert all(r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8 for r in train + test)
  assert all(r.box is None for r in train)
  raw = raw_examples('cifar10', 'train')
  assert [r.name for r in train] == [f'cifar10/train/{i}:{e["id"].decode()}' for i, e in enumerate(raw)]
  np.testing.assert_array_equal(train[3].image, raw[3]['image'])


def test_reading_a_subset_returns_exactly_the_records_asked_for():
  with mocked_tfds():
    data = sources.load(tfds_config('cifar10'))
    everything = list(data.train)
    picked = list(data.train.read(np.array([1, 4, 5, 10])))
    assert list(data.train.read(np.array([], np.int64))) == []
    carved = list(data.train.subset([7, 2]))
  assert [r.name for r in picked] == [everything[i].name for i in (1, 4, 5, 10)]
  assert [r.label for r in picked] == list(data.train.labels[[1, 4, 5, 10]])
  for record, i in zip(picked, (1, 4, 5, 10)):
    np.testing.assert_array_equal(record.image, everything[i].image)
  assert [r.name for r in carved] == [everything[2].name, everything[7].name]


def test_cars196_boxes_are_the_normalized_tfds_boxes_in_pixels():
  data, (train, _), _ = loaded('cars196')
  assert data.num_classes == 196 and data.class_names[0] == 'AM General Hummer SUV 2000'
  for record, example in zip(train, raw_examples('cars196', 'train')):
    height, width = example['image'].shape[:2]
    ymin, xmin, ymax, xmax = example['bbox']
    expected = tuple(int(round(v)) for v in (xmin * width, ymin * height, xmax * width, ymax * height))
    assert record.box == (expected if expected[2] > expected[0] and expected[3] > expected[1] else None)
    assert record.image.shape == (height, width, 3)
  assert sum(r.box is not None for r in train) > NUM_EXAMPLES // 2


def test_stanford_dogs_takes_the_first_object_box_and_names_records_by_file():
  data, (train, _), splits = loaded('stanford_dogs')
  assert splits[-2:] == ['train', 'test'] and data.num_classes == 120
  raw = raw_examples('stanford_dogs', 'train')
  for record, example in zip(train, raw):
    height, width = example['image'].shape[:2]
    assert record.box == tfds_source.pixel_box(example['objects']['bbox'][0], height, width)
    assert record.name.endswith(':' + example['image/filename'].decode())


def test_food101_evaluates_on_validation_without_a_name_feature():
  data, (train, test), splits = loaded('food101')
  assert splits[-2:] == ['train', 'validation'] and data.num_classes == 101
  assert data.class_names[:2] == ('apple_pie', 'baby_back_ribs')
  assert [r.name for r in test[:2]] == ['food101/validation/0', 'food101/validation/1']


def test_dtd_trains_on_train_and_validation_and_its_keys_come_from_the_table():
  data, _, splits = loaded('dtd')  # dtd declares no supervised keys
  assert splits[-2:] == ['train+validation', 'test'] and data.num_classes == 47


def test_explicit_splits_override_the_table():
  _, _, splits = loaded('food101', train_split='train[:50%]', eval_split='train[50%:]')
  assert splits[-2:] == ['train[:50%]', 'train[50%:]']


def test_grayscale_images_keep_their_channel_axis():
  _, (train, _), _ = loaded('fashion_mnist')
  assert train[0].image.shape == (28, 28, 1) and train[0].image.dtype == np.uint8


def test_a_dataset_missing_from_the_table_uses_its_supervised_keys_and_train_test():
  data, (train, _), splits = loaded('mnist')
  assert splits[-2:] == ['train', 'test'] and train[0].image.shape == (28, 28, 1)
  assert data.class_names == tuple(str(i) for i in range(10))


@pytest.mark.parametrize('normalized,expected', [
    ((0.25, 0.1, 0.75, 0.9), (10, 50, 90, 150)),     # (ymin, xmin, ymax, xmax) -> (x_min, y_min, x_max, y_max)
    ((0.0, 0.0, 1.0, 1.0), (0, 0, 100, 200)),
    ((0.5, 0.5, 0.5, 0.9), None),                    # no height: nothing to crop
])
def test_pixel_box_converts_normalized_yx_to_pixel_xy(normalized, expected):
  assert tfds_source.pixel_box(np.array(normalized, np.float32), height=200, width=100) == expected


def test_unknown_tfds_dataset_is_a_config_error_naming_the_known_ones():
  with pytest.raises(ConfigError, match="cifar1O.*cars196.*sun397"):
    sources.load(tfds_config('cifar1O'))
