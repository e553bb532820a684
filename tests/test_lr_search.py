"""The learning-rate search against brute force on a convex problem: logistic regression (model 'linear') on
8x8 digits with plain SGD, where one epoch at each rate of a grid shows which rates are good."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lightcls import lr_search, train
from tests.helpers import REPO, small_config

CONVEX = {'model.name': 'linear', 'data.image_size': 8, 'optimizer.name': 'sgd', 'optimizer.momentum': 0.0,
          'optimizer.weight_decay': 0.0, 'train.batch_size': 16, 'train.eval_batch_size': 64,
          'train.total_epochs': 1.0, 'schedule.milestones_epochs': (), 'augment.order': ()}


def convex_config(**overrides):
  return small_config(**{**CONVEX, **overrides})


@pytest.fixture(scope='module')
def convex_run():
  return train.set_up(convex_config())


def one_epoch_eval_loss(run, rate):
  state = run.fresh_state()
  for batch in run.batches(0, run.steps_per_epoch):
    state, _ = run.train_step(state, batch, rate)
  return run.evaluate(state)[0]['eval/loss']


def test_smoothed_loss_is_the_debiased_exponential_average():
  losses = np.random.default_rng(0).uniform(1, 3, 50)
  weight = 0.05
  for i in (0, 1, 10, 49):
    weights = weight * (1 - weight) ** np.arange(i, -1, -1)   # losses[0..i], newest heaviest
    expected = np.sum(weights * losses[:i + 1]) / np.sum(weights)
    assert lr_search.smoothed(losses, weight)[i] == pytest.approx(expected, rel=1e-12)
  np.testing.assert_allclose(lr_search.smoothed(np.full(20, 2.5), 0.01), 2.5)  # no pull towards zero


def test_steepest_descent_finds_the_inflection_of_a_loss_falling_in_log_lr():
  rates = np.geomspace(1e-6, 1, 200)
  losses = 2 - np.tanh(np.log(rates / 3e-3))  # falls fastest at 3e-3
  assert lr_search.steepest_descent(rates, losses) == pytest.approx(3e-3, rel=0.05)


def test_range_test_suggests_a_rate_that_one_epoch_of_brute_force_finds_good(convex_run, tmp_path):
  config = convex_run.config.lr_search
  test = lr_search.range_test(convex_run, config)
  grid = np.geomspace(1e-3, 1.0, 19)
  losses = np.array([one_epoch_eval_loss(convex_run, float(rate)) for rate in grid])
  good = grid[losses <= 1.25 * losses.min()]  # contiguous on this convex problem
  assert np.all(np.diff(np.flatnonzero(losses <= 1.25 * losses.min())) == 1)
  assert good.min() <= test.suggestion <= good.max(), (test.suggestion, dict(zip(grid, losses)))
  assert len(test.rates) == convex_run.steps_per_epoch and not test.diverged
  assert one_epoch_eval_loss(convex_run, test.suggestion) <= 1.25 * losses.min()


def test_range_test_stops_once_the_loss_diverges_and_plots_the_sweep(convex_run, tmp_path):
  config = convex_run.config.lr_search.copy_and_resolve_references()
  config.update(min_lr=1e-3, max_lr=1e4)
  test = lr_search.range_test(convex_run, config)
  assert test.diverged and len(test.rates) < convex_run.steps_per_epoch
  assert test.smoothed[-1] > config.diverge_factor * test.smoothed.min()
  path = str(tmp_path / 'range_test.png')
  lr_search.range_test_figure(test, path)
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size == (700, 450)


def test_auto_lr_trains_from_the_initial_weights_with_the_searched_rate_once(tmp_path):
  auto = train.train_and_evaluate(convex_config(**{'optimizer.lr': 'auto'}), str(tmp_path / 'auto'))
  with open(tmp_path / 'auto' / 'lr_search' / 'result.json') as f:
    result = json.load(f)
  assert result['method'] == 'range_test' and auto['lr'] == result['lr'] == result['range_test']['suggestion']
  assert os.path.exists(tmp_path / 'auto' / 'lr_search' / 'range_test.png')
  # The search left the model as it was: training at the found rate from scratch ends the same.
  fixed = train.train_and_evaluate(convex_config(**{'optimizer.lr': result['lr']}), str(tmp_path / 'fixed'))
  assert auto['final'] == fixed['final']
  # A rerun (resume) of the finished run takes the stored rate and does not search again.
  stamp = os.stat(tmp_path / 'auto' / 'lr_search' / 'result.json').st_mtime_ns
  again = train.train_and_evaluate(convex_config(**{'optimizer.lr': 'auto'}), str(tmp_path / 'auto'))
  assert again['lr'] == result['lr']
  assert os.stat(tmp_path / 'auto' / 'lr_search' / 'result.json').st_mtime_ns == stamp


def test_two_workers_share_one_optuna_study_to_its_budget_and_prune_bad_rates(tmp_path):
  import optuna
  workdir = tmp_path / 'study'
  os.makedirs(workdir / 'lr_search')
  storage = f'sqlite:///{workdir / "lr_search" / "optuna.db"}'
  # Batches of 2: an epoch of 718 steps takes long enough for both workers to start trials.
  overrides = {**CONVEX, 'train.batch_size': 2, 'lr_search.method': 'optuna', 'lr_search.low': 0.001,
               'lr_search.high': 0.005, 'lr_search.trials': 10, 'lr_search.trial_epochs': 2,
               'lr_search.startup_trials': 1}
  # The study starts with a completed trial at a rate better than any of the searched range (0.02 against
  # 0.001-0.005 at this batch size; measured here as a trial measures): the median rule must then prune
  # every trial of the workers after its first epoch.
  run = train.set_up(convex_config(**overrides))
  state, top1 = run.fresh_state(), []
  for epoch in range(2):
    for batch in run.batches(epoch, run.steps_per_epoch):
      state, _ = run.train_step(state, batch, 0.02)
    top1.append(run.evaluate(state)[0]['eval/top1'])
  study = optuna.create_study(study_name='lr', storage=storage, direction='maximize')
  study.add_trial(optuna.trial.create_trial(
      params={'lr': 0.02}, distributions={'lr': optuna.distributions.FloatDistribution(0.001, 0.02, step=0.001)},
      value=top1[-1], intermediate_values=dict(enumerate(top1))))

  command = [sys.executable, '-m', 'lightcls.lr_search', '--config=configs/quickstart.py', f'--workdir={workdir}',
             *[f'--config.{k}={v!r}' if isinstance(v, tuple) else f'--config.{k}={v}' for k, v in overrides.items()]]
  workers = [subprocess.Popen([*command, f'--worker={i}'], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [w.communicate(timeout=600)[0] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert all('pruned after epoch 1' in output for output in outputs), outputs  # both took trials

  trials = {t.number: t for t in optuna.load_study(study_name='lr', storage=storage).trials if t.number < 10}
  assert sorted(trials) == list(range(10))
  assert all(t.state.name == 'PRUNED' and len(t.intermediate_values) == 1 and t.params['lr'] <= 0.005
             for number, t in trials.items() if number > 0), trials
  with open(workdir / 'lr_search' / 'result.json') as f:
    result = json.load(f)
  assert result['lr'] == 0.02 and result['best_top1'] == top1[-1]
  assert os.path.exists(workdir / 'lr_search' / 'optuna.png')
  assert all('lr 0.02 (optuna)' in output for output in outputs)  # each waited for the other's last trial
