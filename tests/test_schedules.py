"""The learning-rate controllers against torch's schedulers, optax and hand-worked sequences."""
import json
import random

import optax
import pytest
import torch

from configs import default
from lightcls import schedules

STEPS_PER_EPOCH = 3
BASE_LR = 0.1


def schedule_config(**overrides):
  config = default.get_config().schedule
  config.update(overrides)
  return config


def early_stop_config(**overrides):
  config = default.get_config().early_stop
  config.update(overrides)
  return config


def learning_rate(total_epochs=40, milestone_steps=(), base_lr=BASE_LR, **overrides):
  return schedules.create_learning_rate(schedule_config(**overrides), base_lr, STEPS_PER_EPOCH, total_epochs,
                                        milestone_steps)


def torch_optimizer(lr=BASE_LR):
  return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def torch_lr(optimizer):
  return optimizer.param_groups[0]['lr']


def noisy_curve(seed, start, end, epochs=60, noise=0.03):
  """A metric moving from `start` towards `end` like a training curve, with noise and 3-decimal ties."""
  rng = random.Random(seed)
  return [round(end + (start - end) / (1 + 0.15 * t) + rng.uniform(-noise, noise), 3) for t in range(epochs)]


# An eval loss recorded from a small run: falls, flattens, then rises as the model overfits.
RECORDED_EVAL_LOSS = [2.31, 1.87, 1.52, 1.33, 1.21, 1.17, 1.12, 1.13, 1.09, 1.10, 1.08, 1.08, 1.09, 1.07, 1.11,
                      1.06, 1.07, 1.06, 1.08, 1.10, 1.09, 1.12, 1.15, 1.14, 1.18, 1.21, 1.19, 1.24, 1.26, 1.25]


def metric_sequences(seed):
  """Per-epoch metrics dicts; seed None gives the recorded eval loss."""
  losses = RECORDED_EVAL_LOSS if seed is None else noisy_curve(seed, 2.3, 0.6)
  top1 = [round(1 - loss / 2.5, 4) for loss in losses]
  train = noisy_curve(100 + (seed or 0), 2.3, 0.2, len(losses), noise=0.01)
  return [{'eval/loss': l, 'eval/top1': t, 'train/loss': r} for l, t, r in zip(losses, top1, train)]


def rates_after_each_epoch(lr, metrics, first_epoch=1):
  """The rate of every step of the next epoch, after telling `lr` each epoch (epochs numbered from 1)."""
  rates = []
  for epoch, epoch_metrics in enumerate(metrics, start=first_epoch):
    lr.end_epoch(epoch, epoch_metrics)
    rates.append([lr(epoch * STEPS_PER_EPOCH + i) for i in range(STEPS_PER_EPOCH)])
  return rates


PLATEAU_CASES = [
    dict(monitor='eval/loss', mode='min', threshold_mode='rel', threshold=1e-4, patience=0),
    dict(monitor='eval/loss', mode='min', threshold_mode='abs', threshold=0.01, patience=2, cooldown=2),
    dict(monitor='eval/loss', mode='min', threshold_mode='rel', threshold=1e-3, patience=1, factor=0.5,
         min_lr=0.02),
    dict(monitor='eval/top1', mode='auto', threshold_mode='rel', threshold=1e-3, patience=1, min_lr=1e-3),
    dict(monitor='eval/top1', mode='max', threshold_mode='abs', threshold=0.005, patience=3, cooldown=1,
         factor=0.5, min_lr=0.01),
    dict(monitor='train/loss', mode='min', threshold_mode='abs', threshold=0.02, patience=2, cooldown=3,
         factor=0.3),
]


@pytest.mark.parametrize('case', PLATEAU_CASES)
def test_plateau_rate_equals_torch_reduce_lr_on_plateau_after_every_epoch(case):
  reductions = 0
  for seed in (None, 0, 1, 2):
    metrics = metric_sequences(seed)
    lr = learning_rate(name='plateau', **case)
    optimizer = torch_optimizer()
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode='max' if case['monitor'] == 'eval/top1' else 'min', factor=case.get('factor', 0.1),
        patience=case['patience'], threshold=case['threshold'], threshold_mode=case['threshold_mode'],
        cooldown=case.get('cooldown', 0), min_lr=case.get('min_lr', 0.0))
    assert lr(0) == BASE_LR
    for epoch, rates in enumerate(rates_after_each_epoch(lr, metrics), start=1):
      reference.step(metrics[epoch - 1][case['monitor']])
      assert rates == [torch_lr(optimizer)] * STEPS_PER_EPOCH, f'seed {seed}, after epoch {epoch}'
    reductions += torch_lr(optimizer) < BASE_LR
  assert reductions  # the sequences do reach plateaus


def test_plateau_is_not_fed_the_warmup_epochs():
  # Very low losses during warmup: were they fed, every later epoch would be a bad one.
  metrics = [{'eval/loss': 0.01, 'eval/top1': 0.1, 'train/loss': 1.0}] * 3 + metric_sequences(0)
  lr = learning_rate(name='plateau', warmup_epochs=3.0, warmup_from=0.2, patience=2)
  optimizer = torch_optimizer()
  reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2)
  for epoch, rates in enumerate(rates_after_each_epoch(lr, metrics), start=1):
    if epoch > 3:
      reference.step(metrics[epoch - 1]['eval/loss'])
    expected = BASE_LR * (0.2 + 0.8 * epoch / 3) if epoch < 3 else torch_lr(optimizer)
    assert rates == pytest.approx([expected] * STEPS_PER_EPOCH, rel=1e-15), f'after epoch {epoch}'
  assert torch_lr(optimizer) < BASE_LR


class ForcedDropReference(torch.optim.lr_scheduler.ReduceLROnPlateau):
  """ReduceLROnPlateau plus seed 002's forced drop, from its description: after its k-th step, if
  k >= forced_drop_epoch and the rate was never reduced, reduce once and restart cooldown and bad epochs."""

  def __init__(self, optimizer, forced_drop_epoch, **kwargs):
    super().__init__(optimizer, **kwargs)
    self.forced_drop_epoch = forced_drop_epoch
    self.initial_lr = torch_lr(optimizer)

  def step(self, metrics):
    super().step(metrics)
    if self.last_epoch >= self.forced_drop_epoch and torch_lr(self.optimizer) == self.initial_lr:
      self._reduce_lr(self.last_epoch)
      self.cooldown_counter = self.cooldown
      self.num_bad_epochs = 0


@pytest.mark.parametrize('forced_drop_epoch,expected_drop_epoch', [
    (None, 30),  # int(0.75 * 40) - 2 warmup epochs = 28 plateau epochs: the end of epoch 30
    (5, 7),
])
def test_plateau_v2_forces_one_drop_like_a_reference_when_the_loss_keeps_improving(forced_drop_epoch,
                                                                                   expected_drop_epoch):
  # A train loss that improves by 1% every epoch never plateaus: only the forced drop reduces the rate.
  metrics = [{'eval/loss': 1.0, 'eval/top1': 0.5, 'train/loss': 0.99 ** epoch} for epoch in range(40)]
  config = dict(name='plateau_v2', monitor='train/loss', threshold=2e-4, patience=5, cooldown=2,
                warmup_epochs=2.0, forced_drop_epoch=forced_drop_epoch, stop_patience=0)
  lr = learning_rate(total_epochs=40, **config)
  optimizer = torch_optimizer()
  reference = ForcedDropReference(optimizer, expected_drop_epoch - 2, threshold=2e-4, patience=5, cooldown=2)
  for epoch, rates in enumerate(rates_after_each_epoch(lr, metrics), start=1):
    if epoch > 2:  # the first two epochs are warmup
      reference.step(metrics[epoch - 1]['train/loss'])
      assert rates == [torch_lr(optimizer)] * STEPS_PER_EPOCH, f'after epoch {epoch}'
      expected = BASE_LR if epoch < expected_drop_epoch else BASE_LR * 0.1
      assert rates[0] == pytest.approx(expected, rel=1e-15), f'after epoch {epoch}'


@pytest.mark.parametrize('patience,cooldown,min_lr', [(0, 0, 0.0), (1, 2, 1e-3), (3, 0, 0.02), (2, 1, 5e-4)])
def test_plateau_v2_rate_equals_the_forced_drop_reference_on_noisy_losses(patience, cooldown, min_lr):
  for seed in (0, 1, 2):
    metrics = metric_sequences(seed)
    lr = learning_rate(name='plateau_v2', monitor='eval/loss', patience=patience, cooldown=cooldown,
                       min_lr=min_lr, forced_drop_epoch=4 + seed, stop_patience=0)
    optimizer = torch_optimizer()
    reference = ForcedDropReference(optimizer, 4 + seed, patience=patience, cooldown=cooldown, min_lr=min_lr)
    for epoch, rates in enumerate(rates_after_each_epoch(lr, metrics), start=1):
      reference.step(metrics[epoch - 1]['eval/loss'])
      assert rates == [torch_lr(optimizer)] * STEPS_PER_EPOCH, f'seed {seed}, after epoch {epoch}'


# Plateau on a flat train loss, patience 1, lr 1.0, factor 0.1, floor 0.01:
#   epoch 1 sets the best loss; epochs 2, 3 are bad -> lr 0.1 after epoch 3; epochs 4, 5 bad -> the floor after
#   epoch 5 (0.1 * 0.1 = 0.010000000000000002: at the floor within EPS). Epochs 6+ are trained at the floor.
# Top-1 (best rounded to 4 decimals, counted only at the floor, stop_patience 3):
#   epoch 1 .50 best; 2 .70 best; 3-5 .60 no best but above the floor: not counted; 6 .60 at the floor: 1;
#   7 .72 best: 0; 8 .72004 rounds to .72, not a new best: 1; 9 .71: 2; 10 .715: 3 -> stop after epoch 10.
#   (Counting epochs above the floor too would have stopped after epoch 5 or 6, before the floor had a chance.)
V2_STOP_TOP1 = [0.50, 0.70, 0.60, 0.60, 0.60, 0.60, 0.72, 0.72004, 0.71, 0.715, 0.80]


def test_plateau_v2_stops_after_stop_patience_epochs_at_the_floor_without_a_new_best():
  lr = learning_rate(base_lr=1.0, total_epochs=100, name='plateau_v2', monitor='train/loss', patience=1,
                     factor=0.1, min_lr=0.01, stop_patience=3)
  stop_epochs = []
  for epoch, top1 in enumerate(V2_STOP_TOP1, start=1):
    lr.end_epoch(epoch, {'eval/loss': 1.0, 'eval/top1': top1, 'train/loss': 1.0})
    if lr.stop_reason:
      stop_epochs.append(epoch)
  assert lr(3 * STEPS_PER_EPOCH) == pytest.approx(0.01)
  assert stop_epochs[0] == 10
  assert '0.7200' in lr.stop_reason and 'epoch 7' in lr.stop_reason


def test_plateau_v2_never_stops_with_stop_patience_0():
  lr = learning_rate(base_lr=1.0, name='plateau_v2', monitor='train/loss', patience=0, min_lr=0.01,
                     stop_patience=0)
  for epoch in range(1, 50):
    lr.end_epoch(epoch, {'eval/loss': 1.0, 'eval/top1': 0.5, 'train/loss': 1.0})
  assert lr.stop_reason is None and lr(50 * STEPS_PER_EPOCH) == pytest.approx(0.01)


@pytest.mark.parametrize('warmup_epochs,warmup_from,expected', [
    # Per epoch: f + (1 - f) * e / W for a step in epoch e < W.
    (5.0, 0.1, [0.1] * 3 + [0.28] * 3 + [0.46] * 3 + [0.64] * 3 + [0.82] * 3 + [1.0] * 3),
    (2.5, 0.0, [0.0] * 3 + [0.4] * 3 + [0.8] * 3 + [1.0] * 3),  # fractional W: still whole epochs
    (0.5, 0.1, [0.1, 0.55, 1.0, 1.0]),  # W < 1: per step over round(0.5 * 3) = 2 steps
    (0.0, 0.1, [1.0, 1.0]),
])
def test_warmup_rises_linearly_from_warmup_from_per_epoch(warmup_epochs, warmup_from, expected):
  lr = learning_rate(name='constant', base_lr=2.0, warmup_epochs=warmup_epochs, warmup_from=warmup_from)
  assert [lr(step) / 2.0 for step in range(len(expected))] == pytest.approx(expected, rel=1e-12)


def test_multistep_equals_torch_multistep_lr_stepped_per_step():
  milestones = (10, 4, 25)
  lr = learning_rate(name='multistep', milestone_steps=milestones, gamma=0.3)
  optimizer = torch_optimizer()
  reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.3)
  for step in range(40):
    assert lr(step) == pytest.approx(torch_lr(optimizer), rel=1e-12), f'step {step}'
    optimizer.step()
    reference.step()


@pytest.mark.parametrize('warmup_epochs', [0.0, 2.0])
def test_exponential_equals_torch_exponential_lr_stepped_per_epoch_after_warmup(warmup_epochs):
  lr = learning_rate(name='exponential', gamma=0.9, warmup_epochs=warmup_epochs)
  optimizer = torch_optimizer()
  reference = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
  for epoch in range(int(warmup_epochs), 30):
    for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH):
      assert lr(step) == pytest.approx(torch_lr(optimizer), rel=1e-12), f'step {step}'
    optimizer.step()
    reference.step()


@pytest.mark.parametrize('warmup_epochs,min_lr', [(0.0, 0.0), (3.0, 1e-3)])
def test_cosine_equals_optax_cosine_decay_from_the_end_of_warmup(warmup_epochs, min_lr):
  total_epochs = 20
  lr = learning_rate(name='cosine', total_epochs=total_epochs, warmup_epochs=warmup_epochs, min_lr=min_lr)
  start, end = int(warmup_epochs) * STEPS_PER_EPOCH, total_epochs * STEPS_PER_EPOCH
  reference = optax.cosine_decay_schedule(BASE_LR, decay_steps=end - start, alpha=min_lr / BASE_LR)
  for step in list(range(start, end + 5, 4)) + [end - 1, end, end + 100]:
    # optax computes in float32: equal to its precision, relative to the base rate.
    assert lr(step) == pytest.approx(float(reference(step - start)), abs=1e-6 * BASE_LR), f'step {step}'
  assert lr(start) == BASE_LR and lr(end) == min_lr


def test_early_stopping_stops_after_patience_epochs_without_an_improvement_over_min_delta():
  # patience 3, min_delta 0.01 on eval/loss: epoch 1 1.00 best; 2 0.995 (only 0.005 better): 1;
  # 3 0.98 (0.02 better) best: 0; 4 0.975: 1; 5 0.972: 2; 6 0.9705: 3 -> stop after epoch 6, though each
  # epoch was lower than the one before.
  stopper = schedules.EarlyStopping(early_stop_config(patience=3, min_delta=0.01))
  stops = []
  for epoch, loss in enumerate([1.00, 0.995, 0.98, 0.975, 0.972, 0.9705], start=1):
    stopper.end_epoch(epoch, {'eval/loss': loss, 'eval/top1': 0.5, 'train/loss': 1.0})
    stops.append(stopper.stop_reason is not None)
  assert stops == [False] * 5 + [True]
  assert 'epoch 3' in stopper.stop_reason


def test_early_stopping_on_top1_waits_for_a_higher_value():
  # auto mode on eval/top1 is max: epoch 1 .50 best; 2 .49: 1; 3 .51 best: 0; 4 .51: 1; 5 .40: 2 -> stop.
  stopper = schedules.EarlyStopping(early_stop_config(patience=2, monitor='eval/top1'))
  stops = []
  for epoch, top1 in enumerate([0.50, 0.49, 0.51, 0.51, 0.40], start=1):
    stopper.end_epoch(epoch, {'eval/loss': 1.0, 'eval/top1': top1, 'train/loss': 1.0})
    stops.append(stopper.stop_reason is not None)
  assert stops == [False] * 4 + [True]


def test_early_stopping_with_patience_0_never_stops():
  stopper = schedules.EarlyStopping(early_stop_config(patience=0))
  for epoch in range(1, 100):
    stopper.end_epoch(epoch, {'eval/loss': float(epoch), 'eval/top1': 0.0, 'train/loss': 1.0})
  assert stopper.stop_reason is None


def decisions(controller, metrics, first_epoch):
  """What `controller` decides after each of `metrics`: the next epoch's first rate and the stop reason."""
  result = []
  for epoch, epoch_metrics in enumerate(metrics, start=first_epoch):
    controller.end_epoch(epoch, epoch_metrics)
    rate = controller(epoch * STEPS_PER_EPOCH) if callable(controller) else None
    result.append((rate, controller.stop_reason))
  return result


CONTROLLERS = {
    'plateau_v2': lambda: learning_rate(name='plateau_v2', monitor='eval/loss', warmup_epochs=2.0, patience=1,
                                        cooldown=2, min_lr=2e-3, forced_drop_epoch=6, stop_patience=2),
    'plateau': lambda: learning_rate(name='plateau', monitor='eval/top1', patience=2, threshold_mode='abs',
                                     threshold=0.01, cooldown=2, min_lr=1e-4),
    'early_stop': lambda: schedules.EarlyStopping(early_stop_config(patience=4, monitor='eval/loss',
                                                                    min_delta=0.005)),
}


@pytest.mark.parametrize('name', list(CONTROLLERS))
def test_state_restored_from_json_at_any_epoch_decides_like_an_uninterrupted_run(name):
  metrics = metric_sequences(None)
  uninterrupted = decisions(CONTROLLERS[name](), metrics, 1)
  assert len({rate for rate, _ in uninterrupted}) > 1 or uninterrupted[-1][1]  # it does decide something
  for k in range(1, len(metrics)):
    before = CONTROLLERS[name]()
    decisions(before, metrics[:k], 1)
    restored = CONTROLLERS[name]()
    restored.load_state_dict(json.loads(json.dumps(before.state_dict(), allow_nan=False)))
    assert decisions(restored, metrics[k:], k + 1) == uninterrupted[k:], f'restored after epoch {k}'


def test_default_sections_pass_check():
  config = default.get_config()
  schedules.check(config.schedule, config.early_stop)


@pytest.mark.parametrize('section,key,value', [
    ('schedule', 'name', 'step'),
    ('schedule', 'monitor', 'val/loss'),
    ('schedule', 'mode', 'maximum'),
    ('schedule', 'threshold_mode', 'relative'),
    ('schedule', 'factor', 1.0),
    ('schedule', 'factor', 0.0),
    ('schedule', 'patience', -1),
    ('schedule', 'cooldown', -1),
    ('schedule', 'threshold', -1e-4),
    ('schedule', 'warmup_epochs', -1.0),
    ('schedule', 'warmup_from', 1.5),
    ('schedule', 'gamma', 0.0),
    ('schedule', 'min_lr', -1e-5),
    ('schedule', 'forced_drop_epoch', 0),
    ('schedule', 'stop_patience', -1),
    ('early_stop', 'patience', -1),
    ('early_stop', 'monitor', 'eval/top5'),
    ('early_stop', 'mode', 'down'),
    ('early_stop', 'min_delta', -1e-3),
])
def test_check_rejects_a_bad_value_naming_its_key(section, key, value):
  config = default.get_config()
  config[section][key] = value
  with pytest.raises(ValueError) as error:
    schedules.check(config.schedule, config.early_stop)
  assert str(error.value).startswith(f'{section}.{key}={value!r} ')
