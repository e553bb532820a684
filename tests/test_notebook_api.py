"""What a notebook relies on: train_and_evaluate's result, stopping it with KeyboardInterrupt and calling it
again, no recompiling when a cell runs again, and models.create / data.load on their own."""
import json
import os

import numpy as np
import pytest

from lightcls import data, models, train
from lightcls.data import pipeline, sources
from tests.test_lr_search import convex_config

# Logistic regression on 8x8 digits, 3 epochs of 89 steps: the loop's behaviour, in seconds.
THREE_EPOCHS = {'train.total_epochs': 3.0, 'optimizer.lr': 0.05}


def test_a_run_stopped_by_keyboard_interrupt_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  whole = train.train_and_evaluate(convex_config(**THREE_EPOCHS), str(tmp_path / 'whole'))
  add = train.TrainLog.add

  def interrupted_in_epoch_two(log, step, *args, **kwargs):
    if step == 89 + 40:
      raise KeyboardInterrupt
    return add(log, step, *args, **kwargs)

  monkeypatch.setattr(train.TrainLog, 'add', interrupted_in_epoch_two)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(convex_config(**THREE_EPOCHS), str(tmp_path / 'stopped'))
  assert not os.path.exists(tmp_path / 'stopped' / 'summary.json')
  monkeypatch.setattr(train.TrainLog, 'add', add)
  resumed = train.train_and_evaluate(convex_config(**THREE_EPOCHS), str(tmp_path / 'stopped'))
  assert resumed.final == whole.final and resumed.best_top1 == whole.best_top1
  with open(tmp_path / 'stopped' / 'metrics.jsonl') as f:
    epochs = [row['epoch'] for row in map(json.loads, f) if 'epoch' in row]
  assert epochs == [1, 2, 3]  # epoch 2's rows once, though it was started twice


def test_training_the_same_config_again_reuses_the_compiled_steps(tmp_path):
  config = convex_config()
  train.train_and_evaluate(config, str(tmp_path / 'a'))
  first = train.set_up(config)
  train.train_and_evaluate(convex_config(), str(tmp_path / 'b'))
  second = train.set_up(convex_config())
  assert second.train_step is first.train_step and second.eval_step is first.eval_step
  assert first.train_step._cache_size() == 1  # one trace and compilation for both runs


def test_the_result_holds_the_summary_and_the_paths_of_the_run(tmp_path):
  result = train.train_and_evaluate(convex_config(), str(tmp_path / 'run'))
  with open(tmp_path / 'run' / 'summary.json') as f:
    assert result.summary == json.load(f)
  assert result['best_top1'] == result.best_top1 and result.best_epoch == 1
  assert all(os.path.exists(path) for path in result.paths.values())
  report = result.class_report()
  assert np.sum(report['confusion_matrix']) == result.final['eval/examples']
  assert repr(result) == (f'Result(best eval top-1 {100 * result.best_top1:.2f}% at epoch 1 of 1, '
                          f"workdir={str(tmp_path / 'run')!r})")


def test_models_create_builds_the_configured_model_from_keywords():
  config = convex_config().model
  config.update(name='mobilenet_v3_small', width=0.75, dropout=0.1)
  assert models.create('mobilenet_v3_small', 7, width=0.75, dropout=0.1) == models.create_model(config, 7)
  with pytest.raises(ValueError, match=r"unknown model option\(s\) \['widht'\]"):
    models.create('ghostnet', 10, widht=0.5)


def test_data_load_gives_the_prepared_dataset_a_run_trains_on():
  config = convex_config()
  loaded = data.load(config)
  prepared, _ = pipeline.prepared(sources.load(config.data), config.data)
  np.testing.assert_array_equal(loaded.train.images, prepared.train.images)
  np.testing.assert_array_equal(loaded.eval.labels, prepared.eval.labels)
  assert loaded.train.images.shape[1:] == (8, 8, 1) and data.load(config.data).class_names == loaded.class_names
