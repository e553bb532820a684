"""Config checks (before anything is loaded or compiled) and the resolution of epoch/step durations."""
from __future__ import annotations

import difflib
import math
import os
from typing import Sequence

import ml_collections

DTYPES = ('float32', 'bfloat16')


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and what to set instead."""


def choice(key: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f' Did you mean {close[0]!r}?' if close else ''
    raise ConfigError(f'config.{key}={value!r} is not one of {sorted(choices)}.{hint}')


def positive(key: str, value: float | None, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if value is None or value <= 0:
    raise ConfigError(f'config.{key} must be positive; got {value!r}.')


def validate(config: ml_collections.ConfigDict, device_count: int = 1) -> None:
  """Raises ConfigError for a config that cannot run; cheap (no data, no compilation)."""
  from lightcls import losses, lr_search, models, optim, schedules
  from lightcls.data import augment, sources
  choice('model.name', config.model.name, list(models.MODELS))
  choice('model.padding', config.model.padding, models.PADDINGS)
  choice('model.dtype', config.model.dtype, DTYPES)
  choice('model.conv_impl', config.model.conv_impl, models.CONV_IMPLS)
  choice('model.cpu_codegen', config.model.cpu_codegen, models.CPU_CODEGENS)
  choice('model.head', config.model.head, models.HEADS)
  choice('data.source', config.data.source, list(sources.SOURCES) + ['arrays'])
  choice('optimizer.name', config.optimizer.name, list(optim.OPTIMIZERS))
  choice('schedule.name', config.schedule.name, schedules.SCHEDULES)
  choice('loss.name', config.loss.name, losses.LOSSES)
  choice('freeze.trainable', config.freeze.trainable, optim.TRAINABLE)
  if config.init.required and not config.init.checkpoint:
    raise ConfigError('config.init.required=True: this recipe fine-tunes pretrained weights; give them with '
                      '--config.init.checkpoint=FILE (see the config\'s docstring for which file).')
  if config.init.checkpoint and not os.path.exists(config.init.checkpoint):
    raise ConfigError(f'config.init.checkpoint={config.init.checkpoint!r}: no such file or directory.')
  if config.freeze.trainable == 'last_blocks':
    positive('freeze.last_blocks', config.freeze.last_blocks)
  if config.data.source == 'tfds' and not config.data.name:
    raise ConfigError("config.data.name must name the tfds dataset when data.source='tfds' (e.g. 'cifar10').")
  _validate_data(config.data)
  from lightcls import export
  export.check(config.export)
  if len(config.data.mean) != len(config.data.std):
    raise ConfigError(f'config.data.mean {config.data.mean} and config.data.std {config.data.std} '
                      'must have the same length (one value per channel, or one for all).')
  if any(s <= 0 for s in config.data.std):
    raise ConfigError(f'config.data.std must be positive; got {config.data.std}.')
  choice('model.classifier', config.model.classifier, models.CLASSIFIERS)
  for check in (lambda: optim.check(config.optimizer), lambda: schedules.check(config.schedule, config.early_stop),
                lambda: losses.check(config), lambda: lr_search.check(config.lr_search)):
    try:  # each module names its own bad key
      check()
    except ValueError as error:
      raise ConfigError(f'config.{error}') from None
  if config.mutual.enabled and config.freeze.trainable != 'all':
    raise ConfigError("config.mutual.enabled=True trains two whole models; it cannot be combined with "
                      "config.freeze.trainable != 'all'.")
  for key in ('dropout', 'drop_path'):
    if config.model[key] is not None and not 0.0 <= config.model[key] < 1.0:
      raise ConfigError(f'config.model.{key} must be in [0, 1); got {config.model[key]}.')
  try:  # unknown op names and values torchvision would reject, before anything is traced
    augment.check(config.augment)
  except ValueError as error:
    raise ConfigError(f'config.{error}') from None
  try:  # model-specific options (a head or drop path the architecture lacks); builds no weights
    models.create_model(config.model, num_classes=2)
  except ValueError as error:
    raise ConfigError(f'config.{error}') from None
  if config.data.image_size < models.smallest_image(config.model):
    hint = '' if config.model.small_input else ', or set model.small_input=True (total stride 8) for small images'
    raise ConfigError(f'config.data.image_size={config.data.image_size} is too small for {config.model.name}: its '
                      f'total stride is {models.total_stride(config.model)}, so its last stages would see a 1x1 map '
                      f'of padding. Give data.image_size >= {models.smallest_image(config.model)}{hint}.')
  if config.optimizer.lr != 'auto':
    if isinstance(config.optimizer.lr, str) or isinstance(config.optimizer.lr, bool):
      raise ConfigError(f"config.optimizer.lr={config.optimizer.lr!r}: give a number, or 'auto' to search for "
                        'it first (config.lr_search).')
    positive('optimizer.lr', config.optimizer.lr)
  choice('train.on_nonfinite', config.train.on_nonfinite, ('stop', 'restore'))
  if not 0 < config.train.nonfinite_lr_factor < 1:
    raise ConfigError(f'config.train.nonfinite_lr_factor must be in (0, 1); got {config.train.nonfinite_lr_factor}.')
  positive('train.checkpoint_every_steps', config.train.checkpoint_every_steps, allow_none=True)
  for key in ('data.image_size', 'model.width', 'train.log_every_steps', 'train.keep_best',
              'train.checkpoint_every_epochs', 'train.nonfinite_retries'):
    section, name = key.split('.')
    positive(key, config[section][name])
  positive('train.total_epochs', config.train.total_epochs, allow_none=config.train.total_steps is not None)
  positive('train.total_steps', config.train.total_steps, allow_none=True)
  for key in ('batch_size', 'eval_batch_size'):
    size = config.train[key]
    positive(f'train.{key}', size)
    if size % device_count:
      raise ConfigError(f'config.train.{key}={size} must be a multiple of the {device_count} devices '
                        f'(e.g. {math.ceil(size / device_count) * device_count}).')


def _validate_data(data: ml_collections.ConfigDict) -> None:
  from lightcls.data import pipeline
  choice('data.train_resize', data.train_resize, pipeline.RESIZE_MODES)
  choice('data.eval_resize', data.eval_resize, pipeline.RESIZE_MODES)
  if not 0.0 <= data.val_fraction < 1.0:
    raise ConfigError(f'config.data.val_fraction must be in [0, 1) (0: the official eval split); '
                      f'got {data.val_fraction}.')
  if data.erase_background and not data.crop_to_boxes:
    raise ConfigError('config.data.erase_background=True needs config.data.crop_to_boxes=True (it erases '
                      'what lies outside the bounding box).')


def resolve_steps(section: ml_collections.ConfigDict, name: str, steps_per_epoch: int):
  """`section.{name}_steps` if set, else `section.{name}_epochs` converted to steps (numbers or tuples)."""
  steps = section[f'{name}_steps']
  if steps is not None:
    return tuple(int(s) for s in steps) if isinstance(steps, (tuple, list)) else int(steps)
  epochs = section[f'{name}_epochs']
  if epochs is None:
    return None
  if isinstance(epochs, (tuple, list)):
    return tuple(round(e * steps_per_epoch) for e in epochs)
  return max(1, round(epochs * steps_per_epoch))


def explain_bad_override(config: ml_collections.ConfigDict, override: str) -> str | None:
  """For `--config.a.b=v` naming a key that does not exist: which one, the closest key, the valid keys."""
  path = override.split('=', 1)[0].removeprefix('--config.').split('.')
  node, prefix = config, 'config'
  for key in path:
    if not isinstance(node, ml_collections.ConfigDict):
      return f'{override}: {prefix} is a value, not a section; it has no key {key!r}.'
    if key not in node:
      keys = sorted(node.keys())
      close = difflib.get_close_matches(key, keys, n=1)
      hint = f' Did you mean {prefix}.{close[0]}?' if close else ''
      return f'{override}: {prefix} has no key {key!r}.{hint} Valid keys: {", ".join(keys)}.'
    node, prefix = node[key], f'{prefix}.{key}'
  return None
