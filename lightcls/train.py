"""The training loop: data, mesh, state, jit-compiled steps, evaluation, checkpoints, writers.

`train_and_evaluate(config, workdir)` is the whole run; `python -m lightcls.main` calls it, and so can a
notebook. Re-running it on the same workdir resumes from the latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
from typing import Any, Iterator

import flax.linen as nn
import jax
import ml_collections
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from lightcls import checkpoint, config_utils, losses, models, optim, schedules, state as state_lib, steps, writers
from lightcls.data import dataset as dataset_lib, pipeline, sources
from lightcls.metrics import EvalMetrics, TrainMetrics
from lightcls.models import convert


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices (Auto axis type: integer-label gathers need it)."""
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def check_data(config: ml_collections.ConfigDict, dataset: dataset_lib.Dataset) -> None:
  """Config values that only the data can contradict; still before anything is compiled."""
  channels = dataset.train.images.shape[-1]
  if len(config.data.mean) not in (1, channels):
    raise config_utils.ConfigError(
        f'config.data.mean has {len(config.data.mean)} values but the images have {channels} channel(s); '
        f'give {channels} values (or one for all channels) in config.data.mean and config.data.std.')
  if config.train.batch_size > len(dataset.train):
    raise config_utils.ConfigError(
        f'config.train.batch_size={config.train.batch_size} is larger than the {len(dataset.train)} '
        'training examples; lower it.')


def global_batches(batches: Iterator[pipeline.Batch], sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
  """Each process's rows become one global array sharded over the 'data' axis."""
  for batch in batches:
    yield {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def evaluate(eval_step, state: state_lib.TrainState, split: dataset_lib.Split, batch_size: int,
             sharding: NamedSharding) -> dict[str, float]:
  """Loss, top-1 and top-5 over the whole split, every example counted exactly once."""
  total: EvalMetrics | None = None
  batches = pipeline.eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  for batch in global_batches(batches, sharding):
    metrics = eval_step(state, batch)
    total = metrics if total is None else total.merge(metrics)
  results = {f'eval/{k}': float(v) for k, v in total.compute().items()}
  results['eval/examples'] = int(total.loss.count)
  return results


class TrainLog:
  """Accumulates train metrics; every `every` steps and at each epoch's end writes them with the images/s
  and ETA of the steps since the last write (compilation and evaluation excluded) and prints a progress line."""

  def __init__(self, writer, every: int, total_steps: int, num_epochs: int, batch_size: int):
    self.writer, self.every, self.total_steps = writer, every, total_steps
    self.num_epochs, self.batch_size = num_epochs, batch_size
    self.metrics: TrainMetrics | None = None
    self.compiled = False
    self.restart(None)

  def restart(self, step: int | None) -> None:
    """Starts timing throughput at `step` (None: after the next step, which may include compilation)."""
    self.since_step, self.since_time = step, time.perf_counter()

  def add(self, step: int, epoch: int, metrics: TrainMetrics, epoch_end: bool) -> None:
    if not self.compiled:
      jax.block_until_ready(metrics)
      logging.info('Compiled and ran the first train step in %.1f s.', time.perf_counter() - self.since_time)
      self.compiled = True
      self.restart(step)
    self.metrics = metrics if self.metrics is None else self.metrics.merge(metrics)
    if step % self.every == 0 or epoch_end:
      self.write(step, epoch)

  def write(self, step: int, epoch: int) -> None:
    scalars = {f'train/{k}': float(v) for k, v in self.metrics.compute().items()}
    self.metrics = None
    if not math.isfinite(scalars['train/loss']):
      raise FloatingPointError(f'The training loss is {scalars["train/loss"]} at step {step}; lower '
                               'config.optimizer.lr or check the data.')
    speed = ''
    if step > self.since_step:
      steps_per_second = (step - self.since_step) / (time.perf_counter() - self.since_time)
      scalars['train/images_per_second'] = steps_per_second * self.batch_size
      eta = (self.total_steps - step) / steps_per_second
      speed = f' | {scalars["train/images_per_second"]:.0f} img/s | ETA {_duration(eta)}'
      self.restart(step)
    self.writer.write_scalars(step, scalars)
    logging.info('epoch %d/%d step %d/%d | loss %.4f top1 %.2f%% lr %.3g%s', epoch + 1, self.num_epochs, step,
                 self.total_steps, scalars['train/loss'], 100 * scalars['train/top1'],
                 scalars['train/learning_rate'], speed)


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def _save_config(workdir: str, config: ml_collections.ConfigDict, step: int) -> None:
  """Writes config.json; a resumed run with a changed config keeps the earlier one beside it."""
  path, text = os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return
    os.replace(path, os.path.join(workdir, f'config.before_step_{step}.json'))
    logging.warning('The config differs from the one this workdir was started with; the old one is kept as '
                    'config.before_step_%d.json.', step)
  with open(path, 'w') as f:
    f.write(text)


def _write_json(workdir: str, name: str, data: dict[str, Any]) -> None:
  with open(os.path.join(workdir, name), 'w') as f:
    json.dump(data, f, indent=2)


def _summary(config: ml_collections.ConfigDict, meta: dict[str, Any], num_params: int, step: int) -> dict:
  return {'model': config.model.name, 'params': num_params, 'steps': step, 'epochs': meta['epoch'],
          'best_top1': meta['best_top1'], 'best_epoch': meta['best_epoch'], 'best_step': meta['best_step'],
          'final': meta['last_eval'], 'train_seconds': round(meta['train_seconds'], 1)}


def _after_eval(meta: dict[str, Any], results: dict[str, float], epoch: int, step: int,
                train_seconds: float) -> dict[str, Any]:
  """The host-side loop state after an epoch's evaluation (saved with the checkpoint)."""
  meta = dict(meta, epoch=epoch + 1, last_eval=results, train_seconds=train_seconds)
  if meta['best_top1'] is None or results['eval/top1'] > meta['best_top1']:
    meta.update(best_top1=results['eval/top1'], best_epoch=epoch + 1, best_step=step)
  return meta


def model_and_frozen_blocks(config: ml_collections.ConfigDict, num_classes: int,
                            image_shape: tuple[int, ...]) -> tuple[nn.Module, tuple[str, ...]]:
  """The configured model, with the top-level blocks that `config.freeze` keeps fixed marked frozen."""
  model = models.create_model(config.model, num_classes)
  if config.freeze.trainable == 'all':
    return model, ()
  blocks = convert.top_level_blocks(model, (1, *image_shape))
  try:
    frozen = optim.frozen_blocks(blocks, config.freeze)
  except ValueError as error:
    raise config_utils.ConfigError(f'config.{error}') from None
  if frozen:
    logging.info('Frozen: %s; trained: %s.', ', '.join(frozen), ', '.join(b for b in blocks if b not in frozen))
    model = model.clone(layer=dataclasses.replace(model.layer, frozen_blocks=frozen))
  return model, frozen


def with_initial_weights(state: state_lib.TrainState, config: ml_collections.ConfigDict, model: nn.Module,
                         image_shape: tuple[int, ...], sharding: NamedSharding) -> state_lib.TrainState:
  """`state` with parameters and BatchNorm statistics from `config.init.checkpoint` (see configs/default.py)."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  try:
    loaded = convert.load_initial_variables(config.checkpoint, config.reference, model,
                                            jax.device_get(variables), (1, *image_shape))
  except (ValueError, FileNotFoundError) as error:
    raise config_utils.ConfigError(str(error)) from None
  loaded = jax.device_put(loaded, sharding)
  logging.info('Initial weights from %s.', config.checkpoint)
  return state.replace(params=loaded['params'], batch_stats=loaded['batch_stats'])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: dataset_lib.Dataset | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and returns the final summary.

  `dataset` replaces the configured source (use `lightcls.data.sources.from_arrays` for numpy arrays).
  """
  config_utils.validate(config, jax.device_count())
  if dataset is None and config.data.source == 'arrays':
    raise config_utils.ConfigError("config.data.source='arrays' takes its data from the caller: pass "
                                   'dataset=lightcls.data.sources.from_arrays(...) to train_and_evaluate.')
  dataset, data_report = pipeline.prepared(dataset or sources.load(config.data), config.data)
  check_data(config, dataset)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    _write_json(workdir, 'data_report.json', data_report)

  mesh = data_mesh()
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  batch_size = config.train.batch_size
  steps_per_epoch = len(dataset.train) // batch_size
  total_steps = config_utils.resolve_steps(config.train, 'total', steps_per_epoch)
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  milestones = config_utils.resolve_steps(config.schedule, 'milestones', steps_per_epoch) or ()
  schedule = schedules.create_schedule(config.schedule, config.optimizer.lr, milestones)
  logging.info('%d training / %d eval examples, %d classes; %d steps of batch %d (%d epochs of %d steps) '
               'on %d device(s).', len(dataset.train), len(dataset.eval), dataset.num_classes, total_steps,
               batch_size, num_epochs, steps_per_epoch, jax.device_count())

  image_shape = dataset.train.images.shape[1:]
  model, frozen = model_and_frozen_blocks(config, dataset.num_classes, image_shape)
  state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer), image_shape,
                                       config.seed, replicated)
  num_params = state_lib.parameter_count(state)
  logging.info('%s: %s parameters.', config.model.name, f'{num_params:,}')
  manager = checkpoint.create_manager(workdir, config.train.keep_best)
  meta = {'epoch': 0, 'best_top1': None, 'best_epoch': None, 'best_step': None, 'last_eval': {},
          'train_seconds': 0.0}
  resume_step = manager.latest_step()
  if resume_step is not None:
    state, meta = checkpoint.restore(manager, resume_step, state)
    logging.info('Resumed from the checkpoint of step %d (epoch %d).', resume_step, meta['epoch'])
  elif config.init.checkpoint:
    state = with_initial_weights(state, config.init, model, image_shape, replicated)
  if jax.process_index() == 0:
    _save_config(workdir, config, resume_step or 0)
  writer = writers.create_writer(workdir, resume_step)
  if resume_step is None:
    writer.write_hparams({**writers.flat_hparams(config.to_dict()), 'model.params': num_params})
    writer.write_texts(0, {'model/parameters': f'{config.model.name}: {num_params:,} parameters'})

  loss_fn = losses.create_loss(config.loss)
  norm = dict(loss_fn=loss_fn, mean=tuple(config.data.mean), std=tuple(config.data.std))
  train_step = jax.jit(functools.partial(steps.train_step, augment_config=config.augment, frozen=frozen,
                                         **norm),
                       donate_argnums=0, out_shardings=(replicated, replicated))
  eval_step = jax.jit(functools.partial(steps.eval_step, **norm), out_shardings=replicated)

  step = int(state.step)
  log = TrainLog(writer, config.train.log_every_steps, total_steps, num_epochs, batch_size)
  started = time.perf_counter() - meta['train_seconds']
  try:
    for epoch in range(meta['epoch'], num_epochs if step < total_steps else 0):
      batches = pipeline.train_batches(dataset.train, batch_size, config.seed, epoch, jax.process_index(),
                                       jax.process_count())
      batches = itertools.islice(global_batches(batches, batch_sharding), total_steps - step)
      for batch in pipeline.prefetched(batches):
        state, metrics = train_step(state, batch, schedule(step))
        step += 1
        log.add(step, epoch, metrics, epoch_end=step % steps_per_epoch == 0 or step == total_steps)

      results = evaluate(eval_step, state, dataset.eval, config.train.eval_batch_size, batch_sharding)
      meta = _after_eval(meta, results, epoch, step, time.perf_counter() - started)
      checkpoint.save(manager, step, state, meta, {checkpoint.BEST_METRIC: results['eval/top1']})
      writer.write_scalars(step, {k: v for k, v in results.items() if k != 'eval/examples'} | {'epoch': epoch + 1})
      writer.flush()
      log.restart(step)
      logging.info('epoch %d/%d eval | loss %.4f top1 %.2f%% top5 %.2f%% (%d examples) | best %.2f%% (epoch %d)',
                   epoch + 1, num_epochs, results['eval/loss'], 100 * results['eval/top1'],
                   100 * results['eval/top5'], results['eval/examples'], 100 * meta['best_top1'],
                   meta['best_epoch'])
  finally:  # an error mid-run still completes the checkpoint being written and flushes the logs
    manager.wait_until_finished()
    manager.close()
    writer.close()

  summary = _summary(config, meta, num_params, step)
  if jax.process_index() == 0:
    _write_json(workdir, 'summary.json', summary)
  logging.info('Done: best eval top-1 %.2f%% at epoch %d; %s parameters; %s of training.',
               100 * summary['best_top1'], summary['best_epoch'], f'{num_params:,}',
               _duration(summary['train_seconds']))
  return summary
