"""Each seed recipe of configs/ runs end to end for one epoch on stand-in data of its own source: generated
Stanford Cars archives, tfds datasets by name under tfds.testing.mock_data, generated IDX files; the
pretrained variants start from generated reference weight files. Images are 32 px and batches small; every
other key is the recipe's own but the export after training. (Variants that only change values are validated in test_config.py.)"""
import importlib
import json
import os

import numpy as np

from lightcls import train
from tests import reference
from tests.data.test_cars import _updated_release
from tests.data.test_idx import _mnist_dir

SMALL = {'data.image_size': 32, 'data.cache_dir': None, 'train.batch_size': 4, 'train.eval_batch_size': 4,
         'train.total_epochs': 1.0, 'train.log_every_steps': 1,
         'export.formats': ()}  # exporting after training: tests/test_export.py


def recipe(name: str, **overrides):
  module, _, variant = name.partition(':')
  config = importlib.import_module(f'configs.{module}').get_config(*([variant] if variant else []))
  for key, value in {**SMALL, **overrides}.items():
    section, key = key.rsplit('.', 1)
    config[section][key] = value
  return config


def cars_files(directory):
  """12 training and 4 test photos of 3 of the 196 classes."""
  rows = [(1 + 13 * (i % 3), (1, 1, 20, 16), int(i >= 12)) for i in range(16)]
  return str(_updated_release(directory, rows=rows))


def timm_file(directory, name: str) -> str:
  import torch
  path = str(directory / f'{name}.pth')
  torch.save(reference.timm().create_model(name, num_classes=1000).state_dict(), path)
  return path


def mock_tfds_run(config, workdir):
  """A run on the tfds dataset the config names, mocked: 12 random examples per split that follow the
  dataset's real features (boxes included)."""
  from tests.data.test_tfds_source import mocked_tfds
  with mocked_tfds():
    return train.train_and_evaluate(config, workdir)


def assert_one_epoch(summary, workdir):
  assert summary['epochs'] == 1 and np.isfinite(summary['final']['eval/loss'])
  for name in ('summary.json', 'class_report_best.json', 'class_report_last.txt'):
    assert os.path.exists(os.path.join(workdir, name)), name


def test_ghostnet_cars_seed_000(tmp_path):
  config = recipe('ghostnet_cars', **{'data.data_dir': cars_files(tmp_path / 'cars')})
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert_one_epoch(summary, str(tmp_path / 'run'))
  assert summary['steps'] == 3


def test_efficientnet_b0_cars_seed_001_from_timm_weights(tmp_path):
  config = recipe('efficientnet_b0_cars:pretrained', **{'data.data_dir': cars_files(tmp_path / 'cars'),
                                                        'init.checkpoint': timm_file(tmp_path, 'efficientnet_b0')})
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert_one_epoch(summary, str(tmp_path / 'run'))


def test_ote_efficientnet_b0_seed_002_with_am_softmax(tmp_path):
  summary = mock_tfds_run(recipe('ote_efficientnet_b0'), str(tmp_path))
  assert_one_epoch(summary, str(tmp_path))
  assert json.load(open(tmp_path / 'config.json'))['loss']['name'] == 'am_softmax'


def test_ote_mobilenetv3_large_seed_002_trains_a_mutual_pair_from_one_weights_file(tmp_path):
  config = recipe('ote_mobilenetv3_large', **{'init.checkpoint': timm_file(tmp_path, 'mobilenetv3_large_100')})
  summary = mock_tfds_run(config, str(tmp_path / 'run'))
  assert_one_epoch(summary, str(tmp_path / 'run'))
  assert 'eval_peer/top1' in summary['final'] and 'eval_peer/map' in summary['final']
  # Either member comes out of the run as a model of its own configuration.
  import jax
  from lightcls import checkpoint, models
  num_classes = len(json.load(open(tmp_path / 'run' / 'class_report_last.json'))['classes'])
  for member, classifier in ((0, 'linear'), (1, 'cosine')):
    config.model.classifier = classifier
    model = models.create_model(config.model, num_classes)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 32, 32, 3))))
    restored = checkpoint.restore_variables(str(tmp_path / 'run'), member)
    assert jax.tree.map(lambda x: x.shape, restored) == jax.tree.map(lambda x: x.shape, dict(shapes))


def test_mobilenet_v1_dogs_seed_004_from_keras_weights(tmp_path):
  keras = reference.keras()
  path = str(tmp_path / 'mobilenet_7_5_128.weights.h5')
  keras.applications.MobileNet(weights=None, alpha=0.75, input_shape=(128, 128, 3)).save_weights(path)
  config = recipe('mobilenet_v1_dogs:0.75,128', **{'init.checkpoint': path})
  summary = mock_tfds_run(config, str(tmp_path / 'run'))
  assert_one_epoch(summary, str(tmp_path / 'run'))


def test_mobilenet_v2_cifar10_seed_003(tmp_path):
  summary = mock_tfds_run(recipe('mobilenet_v2_cifar10'), str(tmp_path))
  assert_one_epoch(summary, str(tmp_path))


def test_fashion_mnist_recipe_on_generated_idx_files(tmp_path):
  directory = tmp_path / 'idx'
  _mnist_dir(directory, train=16, test=8)
  config = recipe('fashion_mnist', **{'data.data_dir': str(directory), 'data.image_size': 28})
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert_one_epoch(summary, str(tmp_path / 'run'))
