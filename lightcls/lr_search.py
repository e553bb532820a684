"""Finding the learning rate: the range test (fast.ai) and an Optuna TPE study (seed 002).

  python -m lightcls.lr_search --config=configs/X.py --workdir=DIR [--config.lr_search.method=optuna]

Both train copies of the model from its initial weights, with the run's own data, augmentation and compiled
train step, and leave the model as it was. The result goes to DIR/lr_search/ (result.json, a PNG, TensorBoard
scalars); a training run with `config.optimizer.lr='auto'` on the same workdir uses it, or searches first.

- range_test: one epoch (or `lr_search.steps`) with the rate rising exponentially from min_lr to max_lr,
  stopped once the loss diverges. The suggestion is the rate where the smoothed loss falls fastest against
  log(lr). `warmup_epochs` at `warmup_lr` first lets pretrained weights settle, so the sweep's high rates do
  not wreck them before the loss can say which rate is good (seed 002).
- optuna: trials of `trial_epochs` epochs at a constant rate from low..high in steps of `step`, proposed by
  TPE after `startup_trials` random ones, scored by their final eval top-1, pruned by the median rule. The
  study lives in `lr_search.storage` (default: SQLite in DIR/lr_search/); several machines running this
  command on one storage URL share the study and its trial budget (give each a different --worker).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import TYPE_CHECKING, Any, Iterator

import ml_collections
import numpy as np
from absl import flags, logging

from lightcls import config_utils, files, writers

if TYPE_CHECKING:
  from lightcls.train import Setup

FLAGS = flags.FLAGS
METHODS = ('range_test', 'optuna')
FOLDER = 'lr_search'


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `lr_search.` key whose value cannot work."""
  if config.method not in METHODS:
    raise ValueError(f'lr_search.method={config.method!r} is not one of {METHODS}')
  checks = {
      'min_lr': 0 < config.min_lr < config.max_lr, 'steps': config.steps is None or config.steps >= 10,
      'smoothing': 0 < config.smoothing <= 1, 'diverge_factor': config.diverge_factor > 1,
      'warmup_epochs': config.warmup_epochs >= 0, 'warmup_lr': config.warmup_lr > 0,
      'low': 0 < config.low < config.high, 'step': config.step > 0,
      'trials': config.trials >= 1, 'trial_epochs': config.trial_epochs >= 1,
      'startup_trials': config.startup_trials >= 0,
  }
  for key, ok in checks.items():
    if not ok:
      raise ValueError(f'lr_search.{key}={config[key]!r} is out of range (see configs/default.py)')
  if config.method == 'optuna' and not math.isclose(round((config.high - config.low) / config.step),
                                                    (config.high - config.low) / config.step, abs_tol=1e-6):
    raise ValueError(f'lr_search.high - lr_search.low = {config.high - config.low:g} must be a whole number of '
                     f'lr_search.step={config.step:g}')


# The range test.


def range_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
  """`steps` rates from min_lr to max_lr, evenly spaced on a log scale."""
  return np.geomspace(min_lr, max_lr, steps)


class SmoothedLoss:
  """The exponential moving average of the losses added, giving each new one `weight`, debiased (as Adam's
  moments) so its first values are not pulled towards zero."""

  def __init__(self, weight: float):
    self.weight, self.average, self.count = weight, 0.0, 0

  def add(self, loss: float) -> float:
    """The smoothed loss with `loss` added."""
    self.average = (1 - self.weight) * self.average + self.weight * loss
    self.count += 1
    return self.average / (1 - (1 - self.weight) ** self.count)


def smoothed(losses: np.ndarray, weight: float) -> np.ndarray:
  """`SmoothedLoss` after each of `losses`."""
  average = SmoothedLoss(weight)
  return np.array([average.add(loss) for loss in losses])


def steepest_descent(rates: np.ndarray, losses: np.ndarray, skip_start: int = 10, skip_end: int = 5) -> float:
  """The rate where `losses` (smoothed) fall fastest against log(rate), ignoring the first and last few
  points where the average is still forming or already diverging (fast.ai's suggestion)."""
  if len(rates) < skip_start + skip_end + 3:
    skip_start, skip_end = 0, 0
  rates, losses = rates[skip_start:len(rates) - skip_end], losses[skip_start:len(losses) - skip_end]
  return float(rates[np.argmin(np.gradient(losses, np.log(rates)))])


@dataclasses.dataclass
class RangeTest:
  rates: np.ndarray      # the rate of each step taken
  losses: np.ndarray     # its training loss
  smoothed: np.ndarray
  suggestion: float
  diverged: bool         # stopped before the last rate

  def as_json(self) -> dict[str, Any]:
    return {'suggestion': self.suggestion, 'diverged': self.diverged, 'rates': self.rates.tolist(),
            'losses': self.losses.tolist(), 'smoothed': self.smoothed.tolist()}


def _endless_batches(run: Setup, first_epoch: int) -> Iterator[Any]:
  return itertools.chain.from_iterable(run.batches(e, run.steps_per_epoch) for e in itertools.count(first_epoch))


def range_test(run: Setup, config: ml_collections.ConfigDict, writer=None) -> RangeTest:
  """The range test of `config` (the lr_search section) on a copy of `run`'s initial state."""
  state = run.fresh_state()
  for epoch in range(config.warmup_epochs):
    for batch in run.batches(epoch, run.steps_per_epoch):
      state, _ = run.train_step(state, batch, config.warmup_lr)
    logging.info('Range test: warm-up epoch %d/%d at lr %g done.', epoch + 1, config.warmup_epochs,
                 config.warmup_lr)
  rates = range_rates(config.min_lr, config.max_lr, config.steps or run.steps_per_epoch)
  losses, smoothing, started, best = [], SmoothedLoss(config.smoothing), time.perf_counter(), math.inf
  for i, (rate, batch) in enumerate(zip(rates, _endless_batches(run, config.warmup_epochs))):
    state, metrics = run.train_step(state, batch, float(rate))
    losses.append(float(metrics.compute()['loss']))  # waits for the step: the next depends on divergence
    average = smoothing.add(losses[-1])
    best = min(best, average)
    if writer:
      writer.write_scalars(i, {'lr_search/learning_rate': rate, 'lr_search/loss': losses[-1],
                               'lr_search/smoothed_loss': average})
    if (i + 1) % max(1, len(rates) // 10) == 0:
      logging.info('Range test: step %d/%d lr %.3g loss %.4f (smoothed %.4f) | %.1f steps/s', i + 1, len(rates),
                   rate, losses[-1], average, (i + 1) / (time.perf_counter() - started))
    if not math.isfinite(average) or average > config.diverge_factor * best:
      break
  losses = np.array(losses)
  finite = np.isfinite(losses)
  losses, taken = losses[finite], rates[:len(losses)][finite]
  curve = smoothed(losses, config.smoothing)
  return RangeTest(taken, losses, curve, steepest_descent(taken, curve), diverged=len(finite) < len(rates))


def range_test_figure(test: RangeTest, path: str) -> None:
  """Loss and smoothed loss against the rate (log scale), the suggestion marked, as a PNG."""
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
  axes.plot(test.rates, test.losses, color='0.75', linewidth=1, label='loss')
  axes.plot(test.rates, test.smoothed, color='C0', linewidth=2, label='smoothed loss')
  axes.axvline(test.suggestion, color='C3', linestyle='--', label=f'suggestion {test.suggestion:.3g}')
  axes.set(xscale='log', xlabel='learning rate', ylabel='training loss', title='Learning-rate range test')
  low, high = np.min(test.smoothed), np.max(test.smoothed[: max(1, len(test.smoothed) // 2)])
  axes.set_ylim(low - 0.1 * (high - low), high + 0.3 * (high - low))  # the divergent tail off the chart
  axes.legend()
  figure.tight_layout()
  files.replaced(path, lambda temporary: figure.savefig(temporary, format='png'))
  plt.close(figure)


def _pyplot():
  try:
    import matplotlib
  except ImportError:
    raise ImportError('Plots need matplotlib: pip install matplotlib.') from None
  matplotlib.use('Agg')  # files only; no display
  import matplotlib.pyplot as plt
  return plt


# The Optuna study.


def _optuna():
  try:
    import optuna
  except ImportError:
    raise ImportError("lr_search.method='optuna' needs Optuna: pip install \"lightcls[search]\" (or pip install "
                      'optuna).') from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # lightcls logs each trial itself
  return optuna


def _study(config: ml_collections.ConfigDict, folder: str, worker: int):
  optuna = _optuna()
  url = config.storage or f'sqlite:///{os.path.abspath(os.path.join(folder, "optuna.db"))}'
  # Heartbeats: a trial whose worker died stops beating and is failed after the grace period, so the
  # workers still running never wait for it.
  storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                       grace_period=4 * HEARTBEAT_SECONDS)
  pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=0)
            if config.prune else optuna.pruners.NopPruner())
  return optuna.create_study(
      study_name=config.study, storage=storage, direction='maximize', load_if_exists=True, pruner=pruner,
      sampler=optuna.samplers.TPESampler(n_startup_trials=config.startup_trials, seed=worker))


HEARTBEAT_SECONDS = 15


def finished_trials(study, budget: int) -> list:
  """The study's first `budget` trials once none of them runs: the last trials of other workers are waited
  for, so every worker reports the same result."""
  optuna = _optuna()
  waiting = None
  while True:
    optuna.storages.fail_stale_trials(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number < budget]
    running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    if not running:
      return trials
    if running != waiting:
      logging.info('Waiting for trial(s) %s of other workers.', running)
      waiting = running
    time.sleep(1)


class _BudgetSpent(Exception):
  """A worker's trial numbered past the study's budget (another worker took the last one)."""


def trial_objective(run: Setup, config: ml_collections.ConfigDict, writer=None):
  """Optuna's objective: eval top-1 after `trial_epochs` epochs at the trial's constant rate, reported each
  epoch so the pruner can stop a trial early."""
  optuna = _optuna()

  def objective(trial: optuna.Trial) -> float:
    if trial.number >= config.trials:
      trial.study.stop()
      raise _BudgetSpent
    rate = trial.suggest_float('lr', config.low, config.high, step=config.step)
    state, top1 = run.fresh_state(), 0.0
    for epoch in range(config.trial_epochs):
      for batch in run.batches(epoch, run.steps_per_epoch):
        state, _ = run.train_step(state, batch, rate)
      top1 = run.evaluate(state)[0]['eval/top1']
      if writer:
        writer.write_scalars(epoch + 1, {f'lr_search/trial_{trial.number:03d}_top1': top1})
      logging.info('Trial %d (lr %g): epoch %d/%d eval top-1 %.2f%%', trial.number, rate, epoch + 1,
                   config.trial_epochs, 100 * top1)
      trial.report(top1, epoch)
      if trial.should_prune():
        logging.info('Trial %d pruned after epoch %d.', trial.number, epoch + 1)
        raise optuna.TrialPruned()
    return top1

  return objective


def optuna_search(run: Setup, config: ml_collections.ConfigDict, folder: str, worker: int = 0,
                  writer=None) -> dict[str, Any]:
  """Runs trials of the shared study until its budget of `config.trials` is spent; the best completed rate
  and every trial (number, lr, state, top-1 by epoch)."""
  optuna = _optuna()
  study = _study(config, folder, worker)
  study.optimize(trial_objective(run, config, writer), n_trials=config.trials, catch=(_BudgetSpent,),
                 callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=None)])
  trials = [{'number': t.number, 'lr': t.params.get('lr'), 'state': t.state.name, 'value': t.value,
             'top1_by_epoch': [t.intermediate_values[k] for k in sorted(t.intermediate_values)]}
            for t in finished_trials(study, config.trials)]
  completed = [t for t in trials if t['state'] == 'COMPLETE']
  if not completed:
    raise RuntimeError(f'No trial of study {config.study!r} completed; widen lr_search.low..high or '
                       'set lr_search.prune=False.')
  best = max(completed, key=lambda t: t['value'])
  return {'lr': best['lr'], 'best_top1': best['value'], 'trials': trials}


def optuna_figure(trials: list[dict[str, Any]], path: str) -> None:
  """Eval top-1 by epoch of every trial (pruned ones dashed), coloured by rate, as a PNG."""
  plt = _pyplot()
  figure, (curves, scatter) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
  rates = [t['lr'] for t in trials if t['lr'] is not None]
  colours = plt.get_cmap('viridis')
  span = (min(rates), max(rates)) if rates else (0, 1)
  for t in trials:
    if not t['top1_by_epoch']:
      continue
    shade = colours((t['lr'] - span[0]) / ((span[1] - span[0]) or 1))
    style = '--' if t['state'] == 'PRUNED' else '-'
    curves.plot(range(1, len(t['top1_by_epoch']) + 1), t['top1_by_epoch'], style, marker='.', color=shade)
    scatter.scatter(t['lr'], t['top1_by_epoch'][-1], color=shade, marker='x' if style == '--' else 'o')
  curves.set(xlabel='epoch', ylabel='eval top-1', title='Trials (dashed: pruned)')
  scatter.set(xlabel='learning rate', ylabel='last eval top-1', title='Top-1 by rate (x: pruned)')
  figure.tight_layout()
  files.replaced(path, lambda temporary: figure.savefig(temporary, format='png'))
  plt.close(figure)


# Both, as a command and for optimizer.lr='auto'.


def search(run: Setup, workdir: str, worker: int = 0) -> dict[str, Any]:
  """Runs `run.config.lr_search` and writes WORKDIR/lr_search/ (result.json, a PNG, TensorBoard scalars);
  returns the result, whose 'lr' is the chosen rate."""
  import jax
  config = run.config.lr_search
  folder = os.path.join(workdir, FOLDER)
  os.makedirs(folder, exist_ok=True)
  writer = writers.create_writer(folder)
  lead = jax.process_index() == 0
  try:
    if config.method == 'range_test':
      test = range_test(run, config, writer)
      result = {'method': 'range_test', 'lr': test.suggestion, 'range_test': test.as_json()}
      if lead:
        range_test_figure(test, os.path.join(folder, 'range_test.png'))
    else:
      if jax.process_count() > 1:  # each process would draw a trial of its own; their steps need one rate
        raise config_utils.ConfigError(
            "config.lr_search.method='optuna' needs a single process: run python -m lightcls.lr_search in one "
            "(machines can share a study through lr_search.storage), or use method='range_test'.")
      result = {'method': 'optuna', **optuna_search(run, config, folder, worker, writer)}
      if lead:
        optuna_figure(result['trials'], os.path.join(folder, 'optuna.png'))
  finally:
    writer.close()
  if lead:
    files.write_json(os.path.join(folder, 'result.json'), result, indent=1)
  logging.info('Learning-rate search (%s): lr %g. Plot and details in %s.', config.method, result['lr'], folder)
  return result


def earlier_result(workdir: str) -> dict[str, Any] | None:
  return files.read_json(os.path.join(workdir, FOLDER, 'result.json'))


def chosen_lr(run: Setup, workdir: str) -> float:
  """The rate for optimizer.lr='auto': the workdir's earlier search result (a resumed run must train with
  the rate it started with), or a new search."""
  result = earlier_result(workdir)
  if result is not None:
    logging.info('Learning rate %g from the earlier search in %s.', result['lr'], os.path.join(workdir, FOLDER))
    return result['lr']
  return search(run, workdir)['lr']


def main(argv: list[str]) -> None:
  from lightcls import cli, distributed, train
  cli.start(argv)
  result = earlier_result(FLAGS.workdir)
  if result is None or result['method'] != FLAGS.config.lr_search.method:
    try:
      distributed.initialize(FLAGS.config)
      result = search(train.set_up(FLAGS.config), FLAGS.workdir, FLAGS.worker)
    except config_utils.ConfigError as error:
      logging.flush()
      raise SystemExit(f'lightcls: {error}') from None
  print(f"lr {result['lr']:g} ({result['method']}); details in {os.path.join(FLAGS.workdir, FOLDER)}")


if __name__ == '__main__':
  from absl import app

  from lightcls import cli
  cli.define_config_flag()
  flags.DEFINE_string('workdir', None, 'The run directory; the search writes WORKDIR/lr_search/.')
  flags.DEFINE_integer('worker', 0, 'optuna: this machine\'s index among those sharing the study (seeds its '
                       'sampler differently).')
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
