import importlib
import pathlib

import pytest

import configs
from configs import default, quickstart
from lightcls import config_utils
from lightcls.config_utils import ConfigError


@pytest.mark.parametrize('key,value,message', [
    ('model.name', 'ghostnt', "Did you mean 'ghostnet'"),
    ('optimizer.name', 'lamb', "'adamw'"),
    ('data.source', 'imagenet', "'digits'"),
    ('schedule.name', 'onecycle', "'multistep'"),
    ('model.padding', 'valid', "'symmetric'"),
    ('model.cpu_codegen', 'fast', "'fast_compile'"),
    ('data.train_resize', 'crop', "'center_crop'"),
    ('data.val_fraction', 1.0, r'\[0, 1\)'),
    ('data.erase_background', True, 'crop_to_boxes=True'),
    ('loss.label_smoothing', 1.0, r'\[0, 1\)'),
    ('train.batch_size', 0, 'positive'),
    ('optimizer.lr', -1.0, 'positive'),
    ('optimizer.lr', 'fast', "'auto'"),
    ('lr_search.method', 'grid', "'optuna'"),
    ('lr_search.min_lr', 2.0, 'out of range'),
    ('export.quantize', 'int4', "'int8'"),
    ('export.input_size', (480, 640), 'raw_input=True'),
    ('export.batch', -1, '0 for any batch'),
])
def test_validate_names_the_key_and_the_valid_choices(key, value, message):
  config = default.get_config()
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=message) as error:
    config_utils.validate(config)
  assert f'config.{key}' in str(error.value)


def test_an_optuna_search_range_must_be_whole_steps():
  config = default.get_config()
  config.lr_search.update(method='optuna', low=0.001, high=0.01, step=0.004)
  with pytest.raises(ConfigError, match='whole number of lr_search.step=0.004'):
    config_utils.validate(config)
  config.lr_search.step = 0.003
  config_utils.validate(config)


def test_export_formats_are_checked_one_by_one_and_a_savedmodel_is_float32_only():
  config = default.get_config()
  config.export.formats = ('tflite', 'tfjs')
  with pytest.raises(ConfigError, match=r"config.export.formats='tfjs' is not one of \['onnx', 'savedmodel'"):
    config_utils.validate(config)
  config.export.formats, config.export.quantize = ('savedmodel',), 'int8'
  with pytest.raises(ConfigError, match='SavedModel is float32 only'):
    config_utils.validate(config)


def test_batch_must_divide_over_devices():
  config = default.get_config()
  config.train.batch_size = 12
  with pytest.raises(ConfigError, match=r'multiple of the 8 devices \(e.g. 16\)'):
    config_utils.validate(config, device_count=8)


def test_every_shipped_config_is_valid():
  for module in (default, quickstart):
    config_utils.validate(module.get_config())


def test_durations_resolve_from_epochs_unless_steps_are_given():
  train = default.get_config().train
  train.total_epochs = 2.5
  assert config_utils.resolve_steps(train, 'total', steps_per_epoch=10) == 25
  train.total_steps = 7
  assert config_utils.resolve_steps(train, 'total', steps_per_epoch=10) == 7
  schedule = default.get_config().schedule
  schedule.milestones_epochs = (1, 1.5)
  assert config_utils.resolve_steps(schedule, 'milestones', steps_per_epoch=10) == (10, 15)


def test_explain_bad_override_names_the_missing_key_and_the_closest_one():
  message = config_utils.explain_bad_override(default.get_config(), '--config.optimzer.lr=1')
  assert "config has no key 'optimzer'" in message and 'Did you mean config.optimizer?' in message
  assert config_utils.explain_bad_override(default.get_config(), '--config.optimizer.lr=1') is None
  nested = config_utils.explain_bad_override(default.get_config(), '--config.optimizer.lr.x=1')
  assert 'config.optimizer.lr is a value' in nested


VARIANTS = {'efficientnet_b0_cars': ['gray', 'pretrained'], 'mobilenet_v1_dogs': ['0.75,192'],
            'mobilenet_v2_cifar10': ['level1']}


@pytest.mark.parametrize('name', sorted(p.stem for p in pathlib.Path(configs.__file__).parent.glob('*.py')
                                        if p.stem != '__init__'))
def test_every_shipped_config_and_variant_passes_validation(name):
  module = importlib.import_module(f'configs.{name}')
  for variant in [None] + VARIANTS.get(name, []):
    config = module.get_config(*([variant] if variant else []))
    if config.init.required:  # fine-tuning recipes name their weights file on the command line
      config.init.checkpoint = __file__
    config_utils.validate(config)


def test_a_fine_tuning_recipe_without_its_weights_file_is_refused():
  from configs import efficientnet_b0_cars
  with pytest.raises(ConfigError, match='--config.init.checkpoint=FILE'):
    config_utils.validate(efficientnet_b0_cars.get_config('pretrained'))


def test_an_unknown_variant_is_refused_with_the_valid_ones():
  from configs import efficientnet_b0_cars
  with pytest.raises(ValueError, match="'gray', 'pretrained'"):
    efficientnet_b0_cars.get_config('grey')
