"""The training loop: data, mesh, state, jit-compiled steps, evaluation, checkpoints, writers.

`train_and_evaluate(config, workdir)` is the whole run; `python -m lightcls.main` calls it, and so can a
notebook. Re-running it on the same workdir resumes from the latest checkpoint.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import math
import os
import time
from typing import Any, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from lightcls import checkpoint, cli, config_utils, files, metrics as metrics_lib, models, optim, schedules, state as state_lib
from lightcls import export, failures, lr_search, steps, writers
from lightcls.data import dataset as dataset_lib, pipeline, preview, sources
from lightcls.metrics import TrainMetrics
from lightcls.models import convert, mutual


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices (Auto axis type: integer-label gathers need it)."""
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def check_data(config: ml_collections.ConfigDict, dataset: dataset_lib.Dataset) -> None:
  """Config values that only the data can contradict; still before anything is compiled."""
  for name, split in (('train', dataset.train), ('eval', dataset.eval)):
    if len(split) == 0:
      raise config_utils.ConfigError(
          f'The {name} split is empty (config.data.source={config.data.source!r}, '
          f'{name}_split={config.data[f"{name}_split"]!r}); point config.data at a split with images.')
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


def eval_outputs(eval_step, state: state_lib.TrainState, split: dataset_lib.Split, batch_size: int,
                 sharding: NamedSharding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Logits (M, N, C) and per-example losses (M, N) of each of the M models, and the labels (N,), of every
  example of `split` exactly once, on the host."""
  batches = pipeline.eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  # Every batch is dispatched before any result is fetched, so the device never waits on the host.
  outputs = jax.device_get([eval_step(state, batch) for batch in global_batches(batches, sharding)])
  return (np.concatenate([out['logits'][:, out['mask']] for out in outputs], 1),
          np.concatenate([out['loss'][:, out['mask']] for out in outputs], 1),
          np.concatenate([out['label'][out['mask']] for out in outputs]))


def evaluate(eval_step, state: state_lib.TrainState, split: dataset_lib.Split, batch_size: int,
             sharding: NamedSharding, prefix: str = 'eval') -> tuple[dict[str, float], np.ndarray, np.ndarray]:
  """`{prefix}/loss, top1, top5, mean_class_accuracy, map, examples` of the model (a mutual pair's peer as
  `{prefix}_peer/...`), and the model's logits and the labels for the class report."""
  logits, losses, labels = eval_outputs(eval_step, state, split, batch_size, sharding)
  results = {}
  for name, member_logits, member_losses in zip((prefix, f'{prefix}_peer'), logits, losses):
    results.update({f'{name}/{k}': v for k, v in metrics_lib.eval_metrics(member_logits, labels,
                                                                           member_losses).items()})
  results[f'{prefix}/examples'] = len(labels)
  return results, logits[0], labels


class TrainLog:
  """Accumulates train metrics; every `every` steps and at each epoch's end writes them with the images/s
  and ETA of the steps since the last write (compilation and evaluation excluded) and prints a progress line."""

  def __init__(self, writer, every: int, total_steps: int, num_epochs: int, batch_size: int):
    self.writer, self.every, self.total_steps = writer, every, total_steps
    self.num_epochs, self.batch_size = num_epochs, batch_size
    self.metrics: TrainMetrics | None = None
    self.epoch_metrics: TrainMetrics | None = None
    self.compiled = False
    self.live: NotebookLine | bool | None = None  # at the first step (False: no notebook); none for a finished run
    self.last_line, self.best = 'compiling the train step ...', ''
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
    self.epoch_metrics = metrics if self.epoch_metrics is None else self.epoch_metrics.merge(metrics)
    if step % self.every == 0 or epoch_end:
      self.write(step, epoch)
    if self.live is None:
      self.live = NotebookLine.if_in_notebook() or False
    if self.live:
      self.show_live(step, force=epoch_end)

  def show_live(self, step: int, force: bool = False) -> None:
    filled = 20 * step // self.total_steps
    self.live.show(f'[{"#" * filled}{"." * (20 - filled)}] {self.last_line}{self.best}', force=force)

  def evaluated(self, step: int, best_top1: float, best_epoch: int) -> None:
    """After an epoch's evaluation: the best so far joins the progress line; throughput restarts."""
    self.best = f' | best eval top-1 {100 * best_top1:.2f}% (epoch {best_epoch})'
    if self.live:
      self.show_live(step, force=True)
    self.restart(step)

  def epoch_results(self) -> dict[str, float]:
    """train/loss and train/top1 over the epoch just ended (and a fresh start for the next)."""
    computed, self.epoch_metrics = self.epoch_metrics.compute(), None
    return {'train/loss': float(computed['loss']), 'train/top1': float(computed['top1'])}

  def state_dict(self) -> dict[str, Any]:
    """The sums not yet written (saved with a checkpoint, so a resumed run logs what this one would have)."""
    return {'window': metrics_lib.metrics_state(self.metrics), 'epoch': metrics_lib.metrics_state(self.epoch_metrics)}

  def load_state_dict(self, saved: dict[str, Any] | None) -> None:
    saved = saved or {}
    self.metrics = metrics_lib.metrics_from_state(saved.get('window'))
    self.epoch_metrics = metrics_lib.metrics_from_state(saved.get('epoch'))

  def check(self) -> None:
    """Raises NonFinite if a step since the last write had a NaN/Inf loss or gradient (before a checkpoint
    would keep its state)."""
    if self.metrics is not None:
      first_bad = int(self.metrics.first_nonfinite_step.compute())
      if first_bad != metrics_lib.NO_BAD_STEP:
        raise failures.NonFinite(first_bad)

  def write(self, step: int, epoch: int) -> None:
    self.check()
    scalars = {f'train/{k}': float(v) for k, v in self.metrics.compute().items() if k != 'first_nonfinite_step'}
    self.metrics = None
    speed = ''
    if step > self.since_step:
      steps_per_second = (step - self.since_step) / (time.perf_counter() - self.since_time)
      scalars['train/images_per_second'] = steps_per_second * self.batch_size
      eta = (self.total_steps - step) / steps_per_second
      speed = f' | {scalars["train/images_per_second"]:.0f} img/s | ETA {cli.duration(eta)}'
      self.restart(step)
    self.writer.write_scalars(step, scalars)
    self.last_line = (f'epoch {epoch + 1}/{self.num_epochs} step {step}/{self.total_steps} | loss '
                      f'{scalars["train/loss"]:.4f} top1 {100 * scalars["train/top1"]:.2f}% lr '
                      f'{scalars["train/learning_rate"]:.3g}{speed}')
    logging.info('%s', self.last_line)


class NotebookLine:
  """A line of output replaced in place (an IPython display with an id): training progress in a notebook,
  where absl's INFO lines are hidden by default and carriage returns do not redraw in every frontend."""

  def __init__(self):
    from IPython.display import Pretty, display
    self.pretty, self.shown = Pretty, 0.0
    self.handle = display(Pretty(''), display_id=True)

  @classmethod
  def if_in_notebook(cls) -> 'NotebookLine | None':
    """One on process 0 of a Jupyter kernel (an IPython shell with a kernel), else None."""
    import sys
    if 'IPython' not in sys.modules or jax.process_index() != 0:
      return None
    shell = sys.modules['IPython'].get_ipython()
    return cls() if shell is not None and hasattr(shell, 'kernel') else None

  def show(self, text: str, force: bool = False) -> None:
    if force or time.perf_counter() - self.shown > 0.25:  # redrawing costs the kernel a message
      self.handle.update(self.pretty(text))
      self.shown = time.perf_counter()


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
  files.write_text(path, text)


def _summary(config: ml_collections.ConfigDict, meta: dict[str, Any], num_params: int, step: int,
             base_lr: float) -> dict:
  return {'model': config.model.name, 'params': num_params, 'lr': base_lr, 'steps': step, 'epochs': meta['epoch'],
          'best_top1': meta['best_top1'], 'best_epoch': meta['best_epoch'], 'best_step': meta['best_step'],
          'stop_reason': meta['stop_reason'], 'final': meta['last_eval'],
          'train_seconds': round(meta['train_seconds'], 1)}


def _after_eval(meta: dict[str, Any], results: dict[str, float], epoch: int, step: int,
                train_seconds: float) -> dict[str, Any]:
  """The host-side loop state after an epoch's evaluation (saved with the checkpoint)."""
  meta = dict(meta, epoch=epoch + 1, last_eval=results, train_seconds=train_seconds)
  if meta['best_top1'] is None or results['eval/top1'] > meta['best_top1']:
    meta.update(best_top1=results['eval/top1'], best_epoch=epoch + 1, best_step=step)
  return meta


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The configured model; with mutual learning a pair of it, the peer's classifier fitting its loss."""
  model = models.create_model(config.model, num_classes)
  if not config.mutual.enabled:
    return model
  peer = config.model.copy_and_resolve_references()
  peer.classifier = 'cosine' if config.mutual.loss == 'am_softmax' else 'linear'
  return mutual.MutualPair((model, models.create_model(peer, num_classes)))


def model_and_frozen_blocks(config: ml_collections.ConfigDict, num_classes: int,
                            image_shape: tuple[int, ...]) -> tuple[nn.Module, tuple[str, ...]]:
  """The configured model, with the top-level blocks that `config.freeze` keeps fixed marked frozen."""
  model = create_model(config, num_classes)
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


def initial_variables(config: ml_collections.ConfigDict, model: nn.Module, variables: dict[str, Any],
                      image_shape: tuple[int, ...]) -> dict[str, Any]:
  """`variables` replaced by those of `config.checkpoint` (see configs/default.py); each member of a
  mutual pair starts from them."""
  if isinstance(model, mutual.MutualPair):
    loaded = [initial_variables(config, member, mutual.member_variables(variables, i), image_shape)
              for i, member in enumerate(model.members)]
    return {c: {f'members_{i}': v[c] for i, v in enumerate(loaded)} for c in variables}
  try:
    return convert.load_initial_variables(config.checkpoint, config.reference, model, variables,
                                          (1, *image_shape))
  except (ValueError, FileNotFoundError) as error:
    raise config_utils.ConfigError(str(error)) from None


def with_initial_weights(state: state_lib.TrainState, config: ml_collections.ConfigDict, model: nn.Module,
                         image_shape: tuple[int, ...], sharding: NamedSharding) -> state_lib.TrainState:
  """`state` with parameters and BatchNorm statistics (and their average) from `config.init.checkpoint`."""
  loaded = jax.device_put(initial_variables(config, model, jax.device_get(state.variables), image_shape), sharding)
  logging.info('Initial weights from %s.', config.checkpoint)
  return state.replace(params=loaded['params'], batch_stats=loaded['batch_stats'],
                       ema=loaded if state.ema is not None else None)


def write_epoch(writer, workdir: str, step: int, epoch: int, scalars: dict[str, float], report: dict[str, Any],
                is_best: bool) -> None:
  """An epoch's scalars and confusion matrix (TensorBoard, metrics.jsonl) and its class report (the best
  epoch's is kept as class_report_best too)."""
  writer.write_scalars(step, {k: v for k, v in scalars.items() if not k.endswith('/examples')} | {'epoch': epoch})
  writer.write_images(step, {'images/confusion_matrix': metrics_lib.confusion_image(
      np.asarray(report['confusion_matrix']))[None]})
  writer.flush()
  if jax.process_index() == 0:
    write_class_report(workdir, 'class_report_last', report)
    if is_best:
      write_class_report(workdir, 'class_report_best', report)


def write_class_report(workdir: str, name: str, report: dict[str, Any]) -> None:
  """`name`.json and `name`.txt in the workdir, each replaced whole (a reader never sees half a file)."""
  files.write_json(os.path.join(workdir, f'{name}.json'), report, indent=1)
  files.write_text(os.path.join(workdir, f'{name}.txt'), metrics_lib.report_text(report))


def write_predictions(workdir: str, name: str, logits: np.ndarray, labels: np.ndarray) -> None:
  """`name`.npz: the eval split's argmax predictions and labels, in the split's fixed order (reports compare
  runs example by example), replaced whole."""
  def write(temporary: str) -> None:
    with open(temporary, 'wb') as f:  # (a file, not a name: np.savez would add '.npz' to the name)
      np.savez(f, predictions=np.argmax(logits, -1).astype(np.int32), labels=labels.astype(np.int32))
  files.replaced(os.path.join(workdir, f'{name}.npz'), write)


def exports(config: ml_collections.ConfigDict, workdir: str, source: dataset_lib.Dataset) -> dict[str, str]:
  """Exports the best checkpoint in each of `config.export.formats`: {name: folder, or why it failed}. A
  failed export is logged, not raised: the training it follows is complete and saved."""
  done = {}
  for fmt in config.export.formats:
    options = export.Options.of(config.export, fmt)
    try:
      export.export(workdir, options, dataset=source)
      done[options.name] = os.path.join(workdir, 'export', options.name)
    except export.ExportError as error:
      logging.error('Export %s failed: %s Retry with python -m lightcls.export --workdir=%s.', options.name, error,
                    workdir)
      done[options.name] = f'failed: {error}'
  return done


class Compiled(NamedTuple):
  """The parts of a run that its compiled programs depend on. The optimizer and the model are part of the
  train state's static structure: new but equal objects would make jit trace and compile again."""
  model: nn.Module
  frozen: tuple[str, ...]
  tx: optax.GradientTransformation
  train_step: Any  # jit(state, batch, learning_rate) -> (state, metrics); donates the state
  eval_step: Any


_COMPILED: collections.OrderedDict[tuple, Compiled] = collections.OrderedDict()


def compiled_parts(config: ml_collections.ConfigDict, num_classes: int, image_shape: tuple[int, ...],
                   replicated: NamedSharding) -> Compiled:
  """The model, optimizer and jitted steps of `config`, made once per process for the last few configs: a
  notebook cell that trains again (or resumes after an interrupt) reuses their compiled programs."""
  key = (config.to_json_best_effort(sort_keys=True), num_classes, image_shape, replicated)
  if key not in _COMPILED:
    model, frozen = model_and_frozen_blocks(config, num_classes, image_shape)
    options = models.compiler_options(config.model.cpu_codegen)
    _COMPILED[key] = Compiled(
        model, frozen, optim.create_optimizer(config.optimizer),
        jax.jit(steps.configured_train_step(config, num_classes, frozen), donate_argnums=0,
                out_shardings=(replicated, replicated), compiler_options=options),
        jax.jit(steps.configured_eval_step(config, num_classes), out_shardings=replicated,
                compiler_options=options))
    while len(_COMPILED) > 4:
      _COMPILED.popitem(last=False)
  _COMPILED.move_to_end(key)
  return _COMPILED[key]


@dataclasses.dataclass(frozen=True)
class Result:
  """What train_and_evaluate returns: the run's summary.json (`result['best_top1']`, ...) and where its files
  are (`result.paths`)."""
  workdir: str
  summary: dict[str, Any]

  def __getitem__(self, key: str) -> Any:
    return self.summary[key]

  @property
  def best_top1(self) -> float | None:
    return self.summary['best_top1']

  @property
  def best_epoch(self) -> int | None:
    return self.summary['best_epoch']

  @property
  def final(self) -> dict[str, float]:
    """The last epoch's evaluation."""
    return self.summary['final']

  @property
  def paths(self) -> dict[str, str]:
    names = {'checkpoints': 'checkpoints', 'tensorboard': 'tensorboard', 'metrics': 'metrics.jsonl',
             'summary': 'summary.json', 'config': 'config.json', 'class_report': 'class_report_best.json',
             'class_report_text': 'class_report_best.txt', 'predictions': 'predictions_best.npz'}
    return {key: os.path.join(self.workdir, name) for key, name in names.items()}

  def class_report(self) -> dict[str, Any]:
    """The best epoch's per-class report (metrics.class_report), with its confusion matrix."""
    with open(self.paths['class_report']) as f:
      return json.load(f)

  def __repr__(self) -> str:
    top1 = 'no evaluation' if self.best_top1 is None else f'best eval top-1 {100 * self.best_top1:.2f}%'
    return f'Result({top1} at epoch {self.best_epoch} of {self.summary["epochs"]}, workdir={self.workdir!r})'


@dataclasses.dataclass
class Setup:
  """What a run builds before its first step: the prepared data, the mesh's shardings, the model's initial
  state and the compiled steps. Training and the learning-rate search (lr_search.py) share it."""
  config: ml_collections.ConfigDict
  source: dataset_lib.Dataset       # as loaded (exports sample it)
  dataset: dataset_lib.Dataset      # decoded, resized, cached
  data_report: dict[str, Any]
  replicated: NamedSharding
  batch_sharding: NamedSharding
  steps_per_epoch: int
  model: nn.Module
  frozen: tuple[str, ...]
  state: state_lib.TrainState
  train_step: Any                   # jit(state, batch, learning_rate) -> (state, metrics); donates the state
  eval_step: Any

  @property
  def num_params(self) -> int:
    return state_lib.parameter_count(self.state)

  def batches(self, epoch: int, steps: int, start: int = 0) -> Iterator[dict[str, jax.Array]]:
    """`steps` global batches of `epoch` (shuffled by config.seed and the epoch) from its `start`th on,
    prefetched."""
    batches = pipeline.train_batches(self.dataset.train, self.config.train.batch_size, self.config.seed, epoch,
                                     jax.process_index(), jax.process_count(), start)
    return pipeline.prefetched(itertools.islice(global_batches(batches, self.batch_sharding), steps))

  def fresh_state(self) -> state_lib.TrainState:
    """A copy of the initial state (the steps donate theirs)."""
    return jax.tree.map(jnp.copy, self.state)

  def evaluate(self, state: state_lib.TrainState, prefix: str = 'eval'):
    return evaluate(self.eval_step, state, self.dataset.eval, self.config.train.eval_batch_size,
                    self.batch_sharding, prefix)


def set_up(config: ml_collections.ConfigDict, dataset: dataset_lib.Dataset | None = None) -> Setup:
  """Validates `config`, loads and prepares the data and builds the model, its initial state and the jitted
  steps (compiled at their first call). `dataset` replaces the configured source."""
  config_utils.validate(config, jax.device_count())
  if dataset is None and config.data.source == 'arrays':
    raise config_utils.ConfigError("config.data.source='arrays' takes its data from the caller: pass "
                                   'dataset=lightcls.data.sources.from_arrays(...) to train_and_evaluate.')
  source = dataset or sources.load(config.data)
  dataset, data_report = pipeline.prepared(source, config.data)
  check_data(config, dataset)
  mesh = data_mesh()
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  image_shape = dataset.train.images.shape[1:]
  parts = compiled_parts(config, dataset.num_classes, image_shape, replicated)
  state = state_lib.create_train_state(parts.model, parts.tx, image_shape, config.seed, replicated,
                                       ema=config.optimizer.ema_decay > 0)
  return Setup(config, source, dataset, data_report, replicated, batch_sharding,
               len(dataset.train) // config.train.batch_size, parts.model, parts.frozen, state, parts.train_step,
               parts.eval_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: dataset_lib.Dataset | None = None) -> Result:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and returns its summary and paths.

  Interrupted (KeyboardInterrupt, a notebook's stop button), it completes the checkpoint being written and
  re-raises; called again, it resumes from the latest checkpoint, reusing the compiled steps of the config.
  A SIGTERM makes it checkpoint after the current step and raise failures.Preempted. A run that cannot go on
  (unwritable workdir, full disk, device out of memory, NaN/Inf, another model's checkpoint in the workdir)
  raises failures.RunError saying what to do; what it wrote before stays intact.

  `dataset` replaces the configured source (use `lightcls.data.sources.from_arrays` for numpy arrays).
  With `config.optimizer.lr='auto'` the learning rate is searched first (lr_search.py; once per workdir).
  """
  config_utils.validate(config, jax.device_count())  # a bad config writes nothing, not even the workdir
  failures.check_writable(workdir)
  try:
    with failures.PreemptionNotice() as notice:  # from the start: a notice during loading or compiling counts
      return _trained(config, workdir, dataset, notice)
  except Exception as error:
    explained = _explained(error, config, workdir)
    if explained is None:
      raise
    raise explained from error


def _explained(error: Exception, config: ml_collections.ConfigDict, workdir: str) -> failures.RunError | None:
  """The RunError telling what to do about `error`, where it is a known failure of the machine."""
  why = failures.write_failure(error, workdir)
  if why:
    return failures.write_error(workdir, why, checkpoint.committed_steps(workdir))
  if failures.out_of_memory(error):
    return failures.out_of_memory_error(config, error)
  return None


def _trained(config: ml_collections.ConfigDict, workdir: str, dataset: dataset_lib.Dataset | None,
             notice: failures.PreemptionNotice) -> Result:
  run = set_up(config, dataset)
  manager = checkpoint.create_manager(workdir, config.train.keep_best)
  loop = None
  try:
    resume_step = manager.latest_step()
    if resume_step is not None:
      _check_resumable(manager, resume_step, run.state, workdir)
    loop = _Loop(config, workdir, run, manager, resume_step)
    loop.run_to_end(notice)
  finally:  # an error mid-run still completes the checkpoint being written and flushes the logs
    try:
      manager.wait_until_finished()
    finally:
      manager.close()
      if loop is not None:
        loop.writer.close()

  summary = _summary(config, loop.meta, run.num_params, loop.step, loop.base_lr)
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    if config.export.formats:  # after the summary is safe: an export can take minutes
      summary['exports'] = exports(config, workdir, run.source)
      files.write_json(os.path.join(workdir, 'summary.json'), summary)
  logging.info('Done: best eval top-1 %.2f%% at epoch %d; %s parameters; %s of training.',
               100 * summary['best_top1'], summary['best_epoch'], f'{run.num_params:,}',
               cli.duration(summary['train_seconds']))
  return Result(workdir, summary)


def _check_resumable(manager, step: int, state: state_lib.TrainState, workdir: str) -> None:
  """Refuses, before anything in `workdir` is written, a checkpoint that this config's state cannot take."""
  difference = checkpoint.incompatibility(manager, step, state)
  if difference:
    saved = files.read_json(os.path.join(workdir, 'config.json')) or {}
    model = saved.get('model', {}).get('name', 'unknown')
    raise failures.RunError(
        f'{workdir} holds the checkpoint of step {step} of a run this config cannot continue (its config.json '
        f'has model.name={model!r}): {difference}. Nothing was changed. Train this config in another --workdir, '
        f'or move {os.path.join(workdir, "checkpoints")} away to start over in this one.')


class _Loop:
  """The host side of one run: the train state and step, the loop state saved with each checkpoint (`meta`),
  the learning-rate and early-stopping controllers, the writers and the train log."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, run: Setup, manager, resume_step: int | None):
    self.config, self.workdir, self.run, self.manager = config, workdir, run, manager
    dataset, batch_size = run.dataset, config.train.batch_size
    if jax.process_index() == 0:
      files.write_json(os.path.join(workdir, 'data_report.json'), run.data_report)
    self.steps_per_epoch = run.steps_per_epoch
    self.total_steps = config_utils.resolve_steps(config.train, 'total', self.steps_per_epoch)
    self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
    milestones = config_utils.resolve_steps(config.schedule, 'milestones', self.steps_per_epoch) or ()
    self.base_lr = lr_search.chosen_lr(run, workdir) if config.optimizer.lr == 'auto' else config.optimizer.lr
    self.learning_rate = schedules.create_learning_rate(config.schedule, self.base_lr, self.steps_per_epoch,
                                                        self.total_steps / self.steps_per_epoch, milestones)
    self.early_stop = schedules.EarlyStopping(config.early_stop)
    logging.info('%d training / %d eval examples, %d classes; %d steps of batch %d (%d epochs of %d steps) '
                 'on %d device(s).', len(dataset.train), len(dataset.eval), dataset.num_classes, self.total_steps,
                 batch_size, self.num_epochs, self.steps_per_epoch, jax.device_count())
    logging.info('%s: %s parameters.', config.model.name, f'{run.num_params:,}')

    self.template = checkpoint.abstract(run.state)  # (the steps donate the state: restores need its shapes)
    self.state, self.step, self.saved_step = run.state, 0, None
    self.meta = {'epoch': 0, 'best_top1': None, 'best_epoch': None, 'best_step': None, 'last_eval': {},
                 'train_seconds': 0.0, 'stop_reason': None, 'learning_rate': None, 'early_stop': None,
                 'train_log': None, 'lr_scale': 1.0, 'nonfinite_retries': 0}
    self.log = TrainLog(None, config.train.log_every_steps, self.total_steps, self.num_epochs, batch_size)
    if resume_step is not None:
      self.restore(resume_step)
      logging.info('Resumed from the checkpoint of step %d (epoch %d).', resume_step, self.meta['epoch'])
    elif config.init.checkpoint:
      self.state = with_initial_weights(self.state, config.init, run.model, dataset.train.images.shape[1:],
                                        run.replicated)
    if jax.process_index() == 0:
      _save_config(workdir, config, resume_step or 0)
    self.writer = self.log.writer = writers.create_writer(workdir, -1 if resume_step is None else resume_step)
    if resume_step is None:
      self.write_start()
    self.started = time.perf_counter() - self.meta['train_seconds']

  def write_start(self) -> None:
    """A new run's hparams (the rate trained with, also when searched: the hparams view compares numbers),
    its size, and what the augmentation makes of a few training images."""
    config, dataset, num_params = self.config, self.run.dataset, self.run.num_params
    self.writer.write_hparams({**writers.flat_hparams(config.to_dict()), 'optimizer.lr': self.base_lr,
                               'model.params': num_params})
    self.writer.write_texts(0, {'model/parameters': f'{config.model.name}: {num_params:,} parameters'})
    if jax.process_index() == 0:
      self.writer.write_images(0, {'images/augmented': preview.training_grid(
          config, dataset.train, dataset.class_names, seed=config.seed)[None]})

  def restore(self, step: int) -> None:
    """The state, loop state, controllers and unwritten train metrics of checkpoint `step`."""
    self.state, restored = checkpoint.restore(self.manager, step, self.template)
    self.meta.update(restored)
    if self.meta['learning_rate'] is not None:  # (absent from runs of versions before plateau schedules)
      self.learning_rate.load_state_dict(self.meta['learning_rate'])
      self.early_stop.load_state_dict(self.meta['early_stop'])
    self.log.load_state_dict(self.meta['train_log'])
    self.step = self.saved_step = step

  def save(self, eval_top1: float | None = None) -> None:
    """Checkpoints the current step (after the logs of every step up to it are written: a run killed before
    the checkpoint is complete redoes them, and the writers drop what lies past the checkpoint it resumes from)."""
    self.log.check()  # never keep a state that has gone NaN
    self.writer.flush()
    self.meta.update(learning_rate=self.learning_rate.state_dict(), early_stop=self.early_stop.state_dict(),
                     train_log=self.log.state_dict(), train_seconds=time.perf_counter() - self.started)
    checkpoint.save(self.manager, self.step, self.state, self.meta,
                    None if eval_top1 is None else {checkpoint.BEST_METRIC: eval_top1})
    self.saved_step = self.step

  def stop_if(self, told: bool) -> None:
    """After a SIGTERM: checkpoints this step (unless just done) and raises Preempted."""
    if told:
      if self.saved_step != self.step:
        self.save()
      self.manager.wait_until_finished()
      raise failures.Preempted(self.step, self.workdir)

  def run_to_end(self, notice: failures.PreemptionNotice) -> None:
    """Trains to the last step (or an early stop); on NaN/Inf, per config.train.on_nonfinite."""
    self.notice = notice
    while True:
      try:
        return self.train()
      except failures.NonFinite as bad:
        self.recover(bad)

  def recover(self, bad: failures.NonFinite) -> None:
    """Restores the last checkpoint and lowers the learning rate (config.train.on_nonfinite='restore'), or
    raises RunError naming the step and the last good checkpoint."""
    self.manager.wait_until_finished()
    last, train = self.manager.latest_step(), self.config.train
    where = (f'the last good checkpoint is step {last} ({os.path.join(self.workdir, "checkpoints", str(last))})'
             if last is not None else 'no checkpoint was written before it')
    message = f'The training loss or gradient norm became NaN/Inf at step {bad.step}; {where}.'
    retries = self.meta['nonfinite_retries']
    if train.on_nonfinite != 'restore' or last is None or retries >= train.nonfinite_retries:
      done = (f' The learning rate was already lowered {retries} time(s) (config.train.nonfinite_retries).'
              if train.on_nonfinite == 'restore' and last is not None else '')
      raise failures.RunError(
          f'{message}{done} Lower config.optimizer.lr (or set config.optimizer.clip_norm) and run again: it '
          'resumes from the last checkpoint. Or set --config.train.on_nonfinite=restore: the run then goes back to '
          f'it by itself and continues with the learning rate x {train.nonfinite_lr_factor:g}.')
    scale = self.meta['lr_scale'] * train.nonfinite_lr_factor
    self.writer.close()
    self.restore(last)
    self.meta.update(lr_scale=scale, nonfinite_retries=retries + 1)
    self.writer = self.log.writer = writers.create_writer(self.workdir, last)
    logging.warning('%s Restored it; continuing with the learning rate x %g (retry %d of %d).', message, scale,
                    retries + 1, train.nonfinite_retries)

  def train(self) -> None:
    config, run, log, notice = self.config, self.run, self.log, self.notice
    spe, every_steps = self.steps_per_epoch, config.train.checkpoint_every_steps
    stopped = self.step >= self.total_steps or self.meta['stop_reason']
    # A run that ended within an epoch (total_steps) has evaluated it; resumed with more steps, it trains the
    # rest of that epoch first.
    first = min(self.meta['epoch'], self.step // spe)
    for epoch in range(first, self.num_epochs if not stopped else 0):
      batches = run.batches(epoch, self.total_steps - self.step, start=self.step - epoch * spe)
      with contextlib.closing(batches):  # at once when the loop is left early (see pipeline.prefetched)
        for batch in batches:
          self.state, metrics = run.train_step(self.state, batch,
                                               self.learning_rate(self.step) * self.meta['lr_scale'])
          self.step += 1
          epoch_end = self.step % spe == 0 or self.step == self.total_steps
          log.add(self.step, epoch, metrics, epoch_end)
          if every_steps and self.step % every_steps == 0 and not epoch_end:
            self.save()
          self.stop_if(notice.reached(self.step))
      self.evaluate(epoch)
      self.stop_if(notice.received)
      if self.meta['stop_reason']:
        logging.info('Stopped after epoch %d of %d: %s', epoch + 1, self.num_epochs, self.meta['stop_reason'])
        break

  def evaluate(self, epoch: int) -> None:
    """The epoch's evaluation, its logs and controllers' decisions, and (as configured) its checkpoint."""
    run, meta, step = self.run, self.meta, self.step
    epoch_rate = self.learning_rate(step - 1) * meta['lr_scale']
    results, logits, labels = run.evaluate(self.state)
    if self.state.ema is not None:
      results.update(run.evaluate(self.state.with_ema_variables(), prefix='eval_ema')[0])
    train_results = self.log.epoch_results()
    epoch_results = {**results, **train_results}
    controllers = {'learning_rate': self.learning_rate, 'early_stop': self.early_stop}
    if epoch + 1 == meta['epoch'] and meta.get('controllers_before_partial'):
      # This epoch ended early once (total_steps) and was evaluated; now trained to its end, its evaluation
      # replaces that one for the controllers, which then decide as a run that never stopped would.
      for name, controller in controllers.items():
        controller.load_state_dict(meta['controllers_before_partial'][name])
    before = {name: controller.state_dict() for name, controller in controllers.items()}
    for controller in controllers.values():
      controller.end_epoch(epoch + 1, epoch_results)
    self.meta = meta = _after_eval(meta, results, epoch, step, time.perf_counter() - self.started)
    meta['controllers_before_partial'] = before if step % self.steps_per_epoch else None
    meta.update(stop_reason=self.learning_rate.stop_reason or self.early_stop.stop_reason)
    write_epoch(self.writer, self.workdir, step, epoch + 1,
                {**results, 'learning_rate': epoch_rate,
                 **{k.replace('train/', 'train/epoch_'): v for k, v in train_results.items()}},
                metrics_lib.class_report(logits, labels, run.dataset.class_names), meta['best_epoch'] == epoch + 1)
    if jax.process_index() == 0 and meta['best_epoch'] == epoch + 1:
      write_predictions(self.workdir, 'predictions_best', logits, labels)
    last = step >= self.total_steps or meta['stop_reason'] or self.notice.received
    if (epoch + 1) % self.config.train.checkpoint_every_epochs == 0 or last:
      self.save(results['eval/top1'])
    self.log.evaluated(step, meta['best_top1'], meta['best_epoch'])
    logging.info('epoch %d/%d eval | loss %.4f top1 %.2f%% top5 %.2f%% mAP %.2f%% (%d examples) | best %.2f%% '
                 '(epoch %d) | lr %.3g', epoch + 1, self.num_epochs, results['eval/loss'], 100 * results['eval/top1'],
                 100 * results['eval/top5'], 100 * results['eval/map'], results['eval/examples'],
                 100 * meta['best_top1'], meta['best_epoch'], epoch_rate)
