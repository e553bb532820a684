"""Killed at any moment (SIGKILL in a train step, in an evaluation, in a checkpoint write) or told to stop
(SIGTERM), a run resumes with the same command to the result of the run never interrupted, bit for bit: its
weights, optimizer and EMA state, metrics history, controllers and best-epoch tracking."""
import collections
import glob
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader

from tests.helpers import REPO, main_args, read_jsonl, run_main

# 719 training digits (44 steps of 16 an epoch), 718 evaluated; 3 epochs. Checkpoints every 20 steps and after
# each evaluation; train metrics written every 15 steps, so several checkpoints fall inside a logging window.
# Dropout, BatchNorm statistics, random crops, an EMA, a plateau schedule deciding after every epoch (patience 0,
# a threshold no epoch can beat, cooldown 1) and early stopping all carry state across the interruptions.
# MobileNet V1 at half width: six runs of GhostNet 1.0 took 4 minutes of CI, compilation and steps mostly.
RUN = {'model.name': 'mobilenet_v1', 'model.width': 0.5, 'model.dropout': 0.2, 'data.val_fraction': 0.5,
       'train.total_epochs': 3.0, 'train.checkpoint_every_steps': 20, 'train.log_every_steps': 15,
       'optimizer.ema_decay': 0.9, 'schedule.name': 'plateau', 'schedule.monitor': 'eval/top1',
       'schedule.patience': 0, 'schedule.threshold': 1.0, 'schedule.threshold_mode': 'abs', 'schedule.factor': 0.5,
       'schedule.cooldown': 1, 'early_stop.patience': 5}


def interrupted_main(workdir, kill_at):
  """tests/interrupted_main.py: lightcls.main SIGKILLing itself at `kill_at`."""
  return subprocess.Popen([sys.executable, '-m', 'tests.interrupted_main', *main_args(workdir, **RUN)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, 'LIGHTCLS_KILL_AT': kill_at})


def finished(process, timeout=600):
  log = process.communicate(timeout=timeout)[0]
  return process.returncode, log


def committed(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.isdigit())


def history(workdir):
  """metrics.jsonl without the wall time and throughput."""
  return [{k: v for k, v in row.items() if k not in ('time', 'train/images_per_second')}
          for row in read_jsonl(workdir)]


def event_values(workdir):
  """(tag, step) -> [values] of the scalars in every event file, read raw (TensorBoard would hide duplicates)."""
  values = collections.defaultdict(list)
  logdir = os.path.join(workdir, 'tensorboard')
  for name in sorted(os.listdir(logdir)):
    for event in event_file_loader.EventFileLoader(os.path.join(logdir, name)).Load():
      for value in event.summary.value:
        if value.tag.startswith(('train/', 'eval', 'learning_rate', 'epoch')) and not value.tag.endswith(
            '/images_per_second'):  # (a measurement of the moment, and none for a resumed run's first steps)
          values[value.tag, event.step].append(value.tensor.SerializeToString())
  return values


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  code, log = finished(run_main(workdir, **RUN))
  assert code == 0, log[-3000:]
  return workdir


def test_a_run_killed_three_times_and_preempted_once_ends_as_the_uninterrupted_run(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  code, log = finished(interrupted_main(workdir, 'train_step:70'))
  assert code == -signal.SIGKILL, log[-3000:]
  assert committed(workdir) == [44, 60]  # the latest and the best (the only evaluated one)
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))

  code, log = finished(interrupted_main(workdir, 'eval:10'))  # in epoch 2's evaluation (after step 88)
  assert 'Resumed from the checkpoint of step 60 (epoch 1)' in log and code == -signal.SIGKILL, log[-3000:]
  assert committed(workdir)[-1] == 80

  code, log = finished(interrupted_main(workdir, 'checkpoint:100'))
  assert 'Resumed from the checkpoint of step 80 (epoch 1)' in log and code == -signal.SIGKILL, log[-3000:]
  assert committed(workdir)[-1] == 88
  assert glob.glob(os.path.join(workdir, 'checkpoints', '100.orbax-checkpoint-tmp*'))  # killed mid-write

  preempted = run_main(workdir, **RUN)
  for line in preempted.stdout:  # SIGTERM as soon as it has resumed, before its first step
    if 'Resumed from the checkpoint of step 88 (epoch 2)' in line:
      preempted.send_signal(signal.SIGTERM)
      break
  code, log = finished(preempted)
  assert code == 143, log[-3000:]
  stopped_at = int(re.search(r'saved the checkpoint of step (\d+)', log).group(1))
  assert stopped_at > 88 and committed(workdir)[-1] == stopped_at
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*'))  # the cut write was cleaned up

  code, log = finished(run_main(workdir, **RUN))
  assert code == 0 and f'Resumed from the checkpoint of step {stopped_at} (epoch 2)' in log, log[-3000:]

  assert history(workdir) == history(uninterrupted)  # every row once, every value bit for bit
  ours, theirs = event_values(workdir), event_values(uninterrupted)
  assert ours == theirs and all(len(v) == 1 for v in ours.values())
  summary, reference = (json.load(open(os.path.join(w, 'summary.json'))) for w in (workdir, uninterrupted))
  for key in ('final', 'best_top1', 'best_epoch', 'best_step', 'steps', 'epochs', 'stop_reason'):
    assert summary[key] == reference[key], key
  # The plateau schedule halved the rate after epoch 2 (as it did without interruptions): its state came back.
  assert [r['learning_rate'] for r in read_jsonl(workdir) if 'learning_rate' in r] == [2e-3, 2e-3, 1e-3]
  from lightcls import checkpoint
  (state, meta, _), (expected, expected_meta, _) = (checkpoint.read(w, 132) for w in (workdir, uninterrupted))
  for path, leaf in _leaves(expected):
    np.testing.assert_array_equal(_at(state, path), leaf, err_msg=str(path))
  assert meta['early_stop'] == expected_meta['early_stop'] and meta['learning_rate'] == expected_meta['learning_rate']


def _leaves(tree):
  import jax
  return jax.tree_util.tree_leaves_with_path(tree)


def _at(tree, path):
  for key in path:
    tree = tree[getattr(key, 'key', getattr(key, 'idx', None))]
  return tree
