"""Eight simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8) against one."""
import json
import os
import shutil

import jax
import pytest

from lightcls import checkpoint, train
from tests.helpers import read_jsonl, run_main, small_config

# MobileNet V1: its own programs compile for 1 and 8 devices in a third of GhostNet 1.0's time.
MODEL = {'model.name': 'mobilenet_v1'}

@pytest.fixture(scope='module')
def trained_one_epoch(tmp_path_factory):
  """A workdir holding one epoch of digits training on one device (checkpoint at step 89)."""
  workdir = str(tmp_path_factory.mktemp('one_epoch'))
  run = run_main(workdir, **MODEL)
  log = run.communicate(timeout=600)[0]
  assert run.returncode == 0, log[-3000:]
  return workdir


@pytest.fixture(scope='module')
def continued(trained_one_epoch, tmp_path_factory):
  """{'one': workdir, 'eight': workdir, 'logs': {name: output}}: copies of the one-epoch run, each resumed
  from its checkpoint (restored onto 1 or 8 devices) for one more step and an evaluation."""
  copies = {n: str(tmp_path_factory.mktemp(n)) for n in ('one', 'eight')}
  for workdir in copies.values():
    shutil.copytree(trained_one_epoch, workdir, dirs_exist_ok=True)
  runs = {n: run_main(w, env={'XLA_FLAGS': f'--xla_force_host_platform_device_count={1 if n == "one" else 8}'},
                      **MODEL, **{'train.total_steps': 90}) for n, w in copies.items()}
  logs = {n: r.communicate(timeout=900)[0] for n, r in runs.items()}
  assert all(r.returncode == 0 for r in runs.values()), logs['eight'][-3000:]
  return {**copies, 'logs': logs}


def final_eval(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)['final']


def test_eight_devices_continue_a_run_with_the_eval_metrics_of_one(continued):
  # The loss of the resumed step is a train-mode forward pass over the global batch (BatchNorm across
  # devices): it must agree to float precision. The eval metrics agree less tightly: Adam moves the
  # BatchNorm biases whose true gradient is zero (a following BatchNorm removes any shift) by about +-lr in
  # a direction set by float noise, and eval-mode BatchNorm sees those shifts. From a fresh init instead,
  # Adam's first sign-like updates amplify reduction-order noise by ~10x per step.
  copies, logs = {n: continued[n] for n in ('one', 'eight')}, continued['logs']
  assert 'on 8 device(s)' in logs['eight'] and 'Resumed from the checkpoint of step 89' in logs['eight']
  step_loss = {n: [r['train/loss'] for r in read_jsonl(w) if r['step'] == 90 and 'train/loss' in r]
               for n, w in copies.items()}
  assert step_loss['eight'] == pytest.approx(step_loss['one'], rel=1e-5) and len(step_loss['one']) == 1
  one, eight = final_eval(copies['one']), final_eval(copies['eight'])
  assert one['eval/examples'] == eight['eval/examples'] == 360
  assert one['eval/top1'] > 0.2  # a trained model (chance is 0.1; 0.39 measured), so the comparison means something
  assert eight['eval/loss'] == pytest.approx(one['eval/loss'], rel=1e-3)
  # The same small shifts can flip an example whose two best logits are nearly tied: accuracy may differ by
  # at most one of the 360 examples.
  for key in ('eval/top1', 'eval/top5'):
    assert abs(eight[key] - one[key]) <= 1 / 360 + 1e-7, key


def test_one_device_restores_a_checkpoint_of_eight(continued):
  # The 8-device checkpoint of step 90, restored onto this process's one device as a resumed run restores
  # it, evaluates as the 8-device run evaluated the state it saved: eval-mode passes differ only in the
  # order of their sums.
  run = train.set_up(small_config(**MODEL))
  manager = checkpoint.create_manager(continued['eight'])
  try:
    state, meta = checkpoint.restore(manager, 90, run.state)
  finally:
    manager.close()
  assert len(jax.devices()) == 1 and int(state.step) == 90
  results, eight = run.evaluate(state)[0], final_eval(continued['eight'])
  assert meta['last_eval'] == eight
  assert results['eval/examples'] == eight['eval/examples'] == 360
  for key in ('eval/loss', 'eval/top1', 'eval/top5', 'eval/map'):
    assert results[key] == pytest.approx(eight[key], rel=1e-5), key
