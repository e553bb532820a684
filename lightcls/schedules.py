"""Learning-rate controllers, evaluated on the host: a Python float per step, decisions after each epoch.

`create_learning_rate` builds a `LearningRate` from the `config.schedule` section: a linear warmup, then the
named schedule. The train loop asks it for the rate of every step and tells it each epoch's metrics; the
plateau schedules decide on those metrics, and `plateau_v2` may end the run (`stop_reason`). `EarlyStopping`
is the separate, Keras-style stop on a monitored metric. Both keep their decisions in a JSON-serialisable
`state_dict`, so a resumed run decides exactly as an uninterrupted one.

Epochs are counted as the train loop counts them: step `s` belongs to epoch `s // steps_per_epoch` (0-based),
and `end_epoch(epoch, ...)` is called with the number of completed epochs (1-based).
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Sequence

import ml_collections

SCHEDULES = ('constant', 'multistep', 'exponential', 'cosine', 'plateau', 'plateau_v2')
MONITORS = ('eval/loss', 'eval/top1', 'train/loss')
MODES = ('min', 'max', 'auto')
THRESHOLD_MODES = ('rel', 'abs')
# torch's ReduceLROnPlateau eps: a reduction smaller than this is not made, so a rate within EPS of the floor
# is as low as it gets (0.1 * 0.1 is 0.010000000000000002, not 0.01).
EPS = 1e-8


def _resolved_mode(mode: str, monitor: str) -> str:
  """'min' or 'max'; 'auto' means 'max' for top-1 accuracy and 'min' for the losses."""
  if mode != 'auto':
    return mode
  return 'max' if monitor == 'eval/top1' else 'min'


def _worst(mode: str) -> float:
  """The value every first metric improves on (torch's and Keras' starting best)."""
  return math.inf if mode == 'min' else -math.inf


def _finite_or_none(value: float) -> float | None:
  """`value` for a JSON file: the infinite starting best becomes None (JSON has no infinity)."""
  return None if math.isinf(value) else value


class Warmup:
  """The linear warmup: the rate at `step` is lr * factor(step) while step < `steps`.

  Epoch-granular like seed 002's WarmupScheduler when W = warmup_epochs >= 1: the factor is
  f + (1 - f) * e / W for a step in epoch e = step // steps_per_epoch, while e < W (f = warmup_from). A
  fractional W keeps whole epochs: W = 2.5 warms epochs 0, 1, 2 with e / 2.5 = 0, 0.4, 0.8. When 0 < W < 1 an
  epoch is too coarse, so the factor is per step instead: f + (1 - f) * step / n over the first
  n = round(W * steps_per_epoch) steps. W = 0: no warmup.
  """

  def __init__(self, epochs: float, start: float, steps_per_epoch: int):
    self.start = start
    self.duration = epochs  # W
    self.steps_per_epoch = steps_per_epoch
    self.per_step = epochs < 1
    self.steps = round(epochs * steps_per_epoch) if self.per_step else math.ceil(epochs) * steps_per_epoch
    # Epochs with at least one warmup step: the plateau schedules are not fed these epochs.
    self.epochs = math.ceil(self.steps / steps_per_epoch)

  def factor(self, step: int) -> float:
    progress = step / self.steps if self.per_step else (step // self.steps_per_epoch) / self.duration
    return self.start + (1 - self.start) * progress


class LearningRate:
  """The rate of each step: `warmup`, then `after_warmup(step)`. Fixed schedules decide nothing per epoch."""

  def __init__(self, base_lr: float, warmup: Warmup, after_warmup: Callable[[int], float]):
    self.base_lr = base_lr
    self.warmup = warmup
    self.after_warmup = after_warmup
    self.stop_reason: str | None = None

  def __call__(self, step: int) -> float:
    """The rate for global step `step` (0-based)."""
    if step < self.warmup.steps:
      return self.base_lr * self.warmup.factor(step)
    return self.after_warmup(step)

  def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
    """Told after each epoch's evaluation (`epoch` completed epochs); a fixed schedule ignores it."""

  def state_dict(self) -> dict[str, Any]:
    return {}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    """A fixed schedule has no state: its rate is a function of the step alone."""


def constant(base_lr: float) -> Callable[[int], float]:
  """The same rate at every step."""
  return lambda step: base_lr


def multistep(base_lr: float, milestones: Sequence[int], gamma: float) -> Callable[[int], float]:
  """torch's MultiStepLR stepped per step: lr * gamma ** (milestones <= step). Milestones count from step 0,
  warmup included (a milestone inside warmup is applied from the end of warmup on)."""
  milestones = sorted(milestones)
  return lambda step: base_lr * gamma ** bisect.bisect_right(milestones, step)


def exponential(base_lr: float, gamma: float, warmup: Warmup) -> Callable[[int], float]:
  """torch's ExponentialLR stepped per epoch, started after warmup: lr * gamma ** max(0, e - Warmup.epochs)
  for a step in epoch e (without warmup: lr * gamma ** e).

  The decay starts after warmup so that the rate continues from lr instead of jumping to lr * gamma ** W.
  """
  return lambda step: base_lr * gamma ** max(0, step // warmup.steps_per_epoch - warmup.epochs)


def cosine(base_lr: float, min_lr: float, start: int, end: int) -> Callable[[int], float]:
  """Half a cosine per step from `base_lr` at step `start` (the end of warmup) to `min_lr` at step `end`,
  then `min_lr` (optax.cosine_decay_schedule with alpha = min_lr / base_lr, shifted by `start`)."""
  def rate(step: int) -> float:
    progress = min(1.0, (step - start) / (end - start)) if end > start else 1.0
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
  return rate


class Plateau(LearningRate):
  """torch's ReduceLROnPlateau(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps=1e-8),
  stepped once per epoch with metrics[monitor].

  Epochs with warmup steps (`Warmup.epochs`) are not fed to it: the plateau starts after warmup, as seed 002's
  warmup wrapper starts its scheduler. A reduction decided after epoch k applies from the first step of epoch
  k + 1 (global step k * steps_per_epoch) on.
  """

  def __init__(self, config: ml_collections.ConfigDict, base_lr: float, warmup: Warmup):
    super().__init__(base_lr, warmup, lambda step: self.lr)
    self.monitor = config.monitor
    self.mode = _resolved_mode(config.mode, config.monitor)
    self.factor = config.factor
    self.patience = config.patience
    self.threshold = config.threshold
    self.threshold_mode = config.threshold_mode
    self.cooldown = config.cooldown
    self.min_lr = config.min_lr
    self.lr = base_lr
    self.best = _worst(self.mode)
    self.num_bad_epochs = 0
    self.cooldown_counter = 0

  def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
    if epoch > self.warmup.epochs:
      self._step(metrics[self.monitor], epoch - self.warmup.epochs)

  def _step(self, value: float, plateau_epoch: int) -> None:
    """One torch step on `value`, the `plateau_epoch`-th epoch fed to the plateau (1-based)."""
    if self._improves(value):
      self.best = value
      self.num_bad_epochs = 0
    else:
      self.num_bad_epochs += 1
    if self.cooldown_counter > 0:
      self.cooldown_counter -= 1
      self.num_bad_epochs = 0  # bad epochs in cooldown do not count
    if self.num_bad_epochs > self.patience or self._forced_drop(plateau_epoch):
      self._reduce()

  def _improves(self, value: float) -> bool:
    """torch's rule: better than the best by more than threshold (a fraction of the best when 'rel')."""
    if self.mode == 'min':
      return value < (self.best * (1 - self.threshold) if self.threshold_mode == 'rel'
                      else self.best - self.threshold)
    return value > (self.best * (1 + self.threshold) if self.threshold_mode == 'rel'
                    else self.best + self.threshold)

  def _forced_drop(self, plateau_epoch: int) -> bool:
    """Whether to reduce regardless of the metric: never, on a plain plateau."""
    return False

  def _reduce(self) -> None:
    new_lr = max(self.lr * self.factor, self.min_lr)
    if self.lr - new_lr > EPS:
      self.lr = new_lr
    self.cooldown_counter = self.cooldown
    self.num_bad_epochs = 0

  def state_dict(self) -> dict[str, Any]:
    return {'lr': self.lr, 'best': _finite_or_none(self.best), 'num_bad_epochs': self.num_bad_epochs,
            'cooldown_counter': self.cooldown_counter}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    self.lr = state['lr']
    self.best = _worst(self.mode) if state['best'] is None else state['best']
    self.num_bad_epochs = state['num_bad_epochs']
    self.cooldown_counter = state['cooldown_counter']


class PlateauV2(Plateau):
  """Seed 002's ReduceLROnPlateauV2 (OpenVINO deep-object-reid): `Plateau` plus a forced drop and a stop.

  Forced drop: after the k-th epoch fed to the plateau (k = epoch - Warmup.epochs), if k >= forced_drop_epoch
  and the rate is still the initial one, reduce once as a plateau does (lr * factor, floored at min_lr; the
  cooldown counter set to `cooldown`, bad epochs to 0). forced_drop_epoch None means
  int(0.75 * total_epochs) - Warmup.epochs, i.e. a drop at the end of epoch int(0.75 * total_epochs).

  Stop: the best eval/top1 rounded to 4 decimals is tracked over all epochs, warmup included (a new best must
  be strictly greater after rounding). An epoch trained at the floor (its rate, before this epoch's decision,
  within EPS of min_lr) that brings no new best adds one to `epochs_without_best`; a new best resets it to 0;
  epochs above the floor leave it as it is. The run stops (`stop_reason` set) after the epoch where it reaches
  stop_patience, so the floor always gets stop_patience epochs to beat the best (stop_patience 0: never).
  """

  def __init__(self, config: ml_collections.ConfigDict, base_lr: float, warmup: Warmup, total_epochs: float):
    super().__init__(config, base_lr, warmup)
    self.forced_drop_epoch = (int(0.75 * total_epochs) - warmup.epochs if config.forced_drop_epoch is None
                              else config.forced_drop_epoch)
    self.stop_patience = config.stop_patience
    self.best_top1: float | None = None
    self.best_top1_epoch: int | None = None
    self.epochs_without_best = 0

  def _forced_drop(self, plateau_epoch: int) -> bool:
    return plateau_epoch >= self.forced_drop_epoch and self.lr == self.base_lr

  def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
    at_floor = self.lr - self.min_lr <= EPS  # the rate this epoch was trained at
    super().end_epoch(epoch, metrics)
    top1 = round(metrics['eval/top1'], 4)
    if self.best_top1 is None or top1 > self.best_top1:
      self.best_top1, self.best_top1_epoch, self.epochs_without_best = top1, epoch, 0
    elif at_floor:
      self.epochs_without_best += 1
    if self.stop_patience and self.epochs_without_best >= self.stop_patience:
      self.stop_reason = (f'plateau_v2: the learning rate is at its floor {self.min_lr:g} and eval/top1 has not '
                          f'beaten {self.best_top1:.4f} (epoch {self.best_top1_epoch}) for '
                          f'{self.epochs_without_best} epochs there.')

  def state_dict(self) -> dict[str, Any]:
    return {**super().state_dict(), 'best_top1': self.best_top1, 'best_top1_epoch': self.best_top1_epoch,
            'epochs_without_best': self.epochs_without_best, 'stop_reason': self.stop_reason}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    super().load_state_dict(state)
    self.best_top1 = state['best_top1']
    self.best_top1_epoch = state['best_top1_epoch']
    self.epochs_without_best = state['epochs_without_best']
    self.stop_reason = state['stop_reason']


def create_learning_rate(config: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int,
                         total_epochs: float, milestone_steps: Sequence[int]) -> LearningRate:
  """The controller of a `config.schedule` section for a run of `total_epochs` epochs (cosine ends at step
  round(total_epochs * steps_per_epoch); plateau_v2's default forced drop is at int(0.75 * total_epochs)).

  `milestone_steps`: multistep's milestones already resolved to steps.
  """
  _check_schedule(config)
  warmup = Warmup(config.warmup_epochs, config.warmup_from, steps_per_epoch)
  if config.name == 'plateau':
    return Plateau(config, base_lr, warmup)
  if config.name == 'plateau_v2':
    return PlateauV2(config, base_lr, warmup, total_epochs)
  if config.name == 'multistep':
    after_warmup = multistep(base_lr, milestone_steps, config.gamma)
  elif config.name == 'exponential':
    after_warmup = exponential(base_lr, config.gamma, warmup)
  elif config.name == 'cosine':
    after_warmup = cosine(base_lr, config.min_lr, warmup.steps, round(total_epochs * steps_per_epoch))
  else:
    after_warmup = constant(base_lr)
  return LearningRate(base_lr, warmup, after_warmup)


class EarlyStopping:
  """Keras' EarlyStopping (seeds 000, 001): an epoch improves when its metrics[monitor] beats the best so far
  by more than min_delta in the monitor's direction; the run stops (`stop_reason` set) after the epoch that
  makes `patience` consecutive epochs without improvement. patience 0: off, never stops.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    _check_early_stop(config)
    self.patience = config.patience
    self.monitor = config.monitor
    self.mode = _resolved_mode(config.mode, config.monitor)
    self.min_delta = config.min_delta
    self.best = _worst(self.mode)
    self.best_epoch: int | None = None
    self.wait = 0
    self.stop_reason: str | None = None

  def _improves(self, value: float) -> bool:
    if self.mode == 'min':
      return value + self.min_delta < self.best
    return value - self.min_delta > self.best

  def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
    """Told after each epoch's evaluation (`epoch` completed epochs)."""
    if not self.patience:
      return
    value = metrics[self.monitor]
    if self._improves(value):
      self.best, self.best_epoch, self.wait = value, epoch, 0
    else:
      self.wait += 1
    if self.wait >= self.patience:
      self.stop_reason = (f'early stop: {self.monitor} has not improved by more than {self.min_delta:g} for '
                          f'{self.wait} epochs (best {self.best:.4f} at epoch {self.best_epoch}).')

  def state_dict(self) -> dict[str, Any]:
    return {'best': _finite_or_none(self.best), 'best_epoch': self.best_epoch, 'wait': self.wait,
            'stop_reason': self.stop_reason}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    self.best = _worst(self.mode) if state['best'] is None else state['best']
    self.best_epoch = state['best_epoch']
    self.wait = state['wait']
    self.stop_reason = state['stop_reason']


def _require(ok: bool, key: str, value: Any, what: str) -> None:
  """Raises ValueError('<key>=<value> <what>') unless `ok`."""
  if not ok:
    raise ValueError(f'{key}={value!r} {what}')


def _check_schedule(schedule: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad key of a `config.schedule` section."""
  s = schedule
  _require(s.name in SCHEDULES, 'schedule.name', s.name, f'is not one of {SCHEDULES}.')
  _require(0 < s.gamma <= 1, 'schedule.gamma', s.gamma,
          'must be in (0, 1]: multistep and exponential multiply the rate by it (seed 000: 0.1, or 0.95-0.99).')
  _require(s.min_lr >= 0, 'schedule.min_lr', s.min_lr, 'must be >= 0 (the final or lowest rate).')
  _require(s.warmup_epochs >= 0, 'schedule.warmup_epochs', s.warmup_epochs, 'must be >= 0 (0: no warmup).')
  _require(0 <= s.warmup_from <= 1, 'schedule.warmup_from', s.warmup_from,
          'must be in [0, 1]: warmup starts at warmup_from * lr (seed 002: 0.1).')
  _require(s.monitor in MONITORS, 'schedule.monitor', s.monitor, f'is not one of {MONITORS}.')
  _require(s.mode in MODES, 'schedule.mode', s.mode, f'is not one of {MODES}.')
  _require(0 < s.factor < 1, 'schedule.factor', s.factor,
          'must be in (0, 1): a plateau multiplies the rate by it (e.g. 0.1).')
  _require(s.patience >= 0, 'schedule.patience', s.patience, 'must be >= 0 (epochs without improvement).')
  _require(s.threshold >= 0, 'schedule.threshold', s.threshold, 'must be >= 0 (e.g. 1e-4).')
  _require(s.threshold_mode in THRESHOLD_MODES, 'schedule.threshold_mode', s.threshold_mode,
          f'is not one of {THRESHOLD_MODES}.')
  _require(s.cooldown >= 0, 'schedule.cooldown', s.cooldown, 'must be >= 0 (epochs after a drop).')
  _require(s.forced_drop_epoch is None or s.forced_drop_epoch >= 1, 'schedule.forced_drop_epoch',
          s.forced_drop_epoch, 'must be >= 1 (epochs after warmup), or None for int(0.75 * total epochs) - '
          'warmup epochs.')
  _require(s.stop_patience >= 0, 'schedule.stop_patience', s.stop_patience, 'must be >= 0 (0: never stop).')


def _check_early_stop(early_stop: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad key of a `config.early_stop` section."""
  e = early_stop
  _require(e.patience >= 0, 'early_stop.patience', e.patience, 'must be >= 0 (0: off).')
  _require(e.monitor in MONITORS, 'early_stop.monitor', e.monitor, f'is not one of {MONITORS}.')
  _require(e.mode in MODES, 'early_stop.mode', e.mode, f'is not one of {MODES}.')
  _require(e.min_delta >= 0, 'early_stop.min_delta', e.min_delta,
          'must be >= 0 (the least change that counts as improvement, e.g. 1e-3).')


def check(schedule: ml_collections.ConfigDict, early_stop: ml_collections.ConfigDict) -> None:
  """Raises ValueError('<section>.<key>=<value> <what is wrong>') for the first bad value of either section;
  the caller prefixes 'config.'."""
  _check_schedule(schedule)
  _check_early_stop(early_stop)
