"""A run killed after its first checkpoint resumes from it when the same command is run again."""
import json
import os
import signal
import time

import pytest

from tests.helpers import read_jsonl, run_main


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_command(tmp_path):
  workdir = str(tmp_path)
  first = run_main(workdir, **{'train.total_epochs': 2.0})
  checkpoint = os.path.join(workdir, 'checkpoints', '89')  # 1437 // 16 steps per epoch
  deadline = time.time() + 300
  while not os.path.isdir(checkpoint) and first.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert os.path.isdir(checkpoint), first.communicate()[0][-3000:]
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))  # killed before finishing

  second = run_main(workdir, **{'train.total_epochs': 2.0})
  log = second.communicate(timeout=600)[0]
  assert second.returncode == 0, log[-3000:]
  assert 'Resumed from the checkpoint of step 89 (epoch 1)' in log
  assert 'epoch 1/2 step' not in log  # the first epoch was not trained again
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['steps'] == 178 and summary['epochs'] == 2
  rows = read_jsonl(workdir)
  assert [r['step'] for r in rows if 'eval/top1' in r] == [89, 178]
  train_steps = [r['step'] for r in rows if 'train/loss' in r]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 178


def test_a_resumed_plateau_run_follows_the_uninterrupted_learning_rate_trajectory(tmp_path, monkeypatch):
  """A plateau schedule that drops at every stalled epoch, with a cooldown: its counters must come back
  from the checkpoint for the resumed run to drop at the same epochs."""
  from lightcls import checkpoint, train
  from tests.helpers import small_config
  plateau = {'train.total_epochs': 4.0, 'schedule.name': 'plateau', 'schedule.monitor': 'eval/top1',
             'schedule.patience': 0, 'schedule.threshold': 1.0, 'schedule.threshold_mode': 'abs',
             'schedule.factor': 0.5, 'schedule.cooldown': 1}  # no epoch can beat the first by 1.0
  whole = str(tmp_path / 'whole')
  train.train_and_evaluate(small_config(**plateau), whole)

  resumed = str(tmp_path / 'resumed')
  save = checkpoint.save

  def save_then_stop_after_epoch_2(manager, step, state, meta, metrics):
    save(manager, step, state, meta, metrics)
    if meta['epoch'] == 2:
      raise KeyboardInterrupt
  monkeypatch.setattr(checkpoint, 'save', save_then_stop_after_epoch_2)
  try:
    train.train_and_evaluate(small_config(**plateau), resumed)
  except KeyboardInterrupt:
    pass
  monkeypatch.setattr(checkpoint, 'save', save)
  train.train_and_evaluate(small_config(**plateau), resumed)

  def trajectory(workdir):
    rows = read_jsonl(workdir)
    return ([(r['step'], r['learning_rate']) for r in rows if 'learning_rate' in r],
            [(r['step'], r['train/learning_rate']) for r in rows if 'train/learning_rate' in r])
  epochs, steps = trajectory(whole)
  # Epoch 1 sets the best; epoch 2 stalls (drop); epoch 3 is the cooldown; epoch 4 stalls again.
  assert [rate for _, rate in epochs] == pytest.approx([2e-3, 2e-3, 1e-3, 1e-3])
  assert trajectory(resumed) == (epochs, steps)
  assert read_jsonl(resumed)[-1] == pytest.approx(read_jsonl(whole)[-1], rel=1e-5)
