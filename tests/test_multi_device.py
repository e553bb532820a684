"""Eight simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8) against one."""
import json
import os
import shutil

import pytest

from tests.helpers import read_jsonl, run_main


@pytest.fixture(scope='module')
def trained_one_epoch(tmp_path_factory):
  """A workdir holding one epoch of digits training on one device (checkpoint at step 89)."""
  workdir = str(tmp_path_factory.mktemp('one_epoch'))
  run = run_main(workdir)
  log = run.communicate(timeout=600)[0]
  assert run.returncode == 0, log[-3000:]
  return workdir


def test_eight_devices_continue_a_run_with_the_eval_metrics_of_one(trained_one_epoch, tmp_path):
  # Both copies resume from the same checkpoint (restored onto 1 or 8 devices), train one more step and
  # evaluate. The loss of that step is a train-mode forward pass over the global batch (BatchNorm across
  # devices): it must agree to float precision. The eval metrics agree less tightly: Adam moves the
  # BatchNorm biases whose true gradient is zero (a following BatchNorm removes any shift) by about +-lr in
  # a direction set by float noise, and eval-mode BatchNorm sees those shifts. From a fresh init instead,
  # Adam's first sign-like updates amplify reduction-order noise by ~10x per step.
  copies = {n: str(tmp_path / n) for n in ('one', 'eight')}
  for workdir in copies.values():
    shutil.copytree(trained_one_epoch, workdir)
  runs = {n: run_main(w, env={'XLA_FLAGS': f'--xla_force_host_platform_device_count={1 if n == "one" else 8}'},
                      **{'train.total_steps': 90}) for n, w in copies.items()}
  logs = {n: r.communicate(timeout=900)[0] for n, r in runs.items()}
  assert all(r.returncode == 0 for r in runs.values()), logs['eight'][-3000:]
  assert 'on 8 device(s)' in logs['eight'] and 'Resumed from the checkpoint of step 89' in logs['eight']
  step_loss = {n: [r['train/loss'] for r in read_jsonl(w) if r['step'] == 90 and 'train/loss' in r]
               for n, w in copies.items()}
  assert step_loss['eight'] == pytest.approx(step_loss['one'], rel=1e-5) and len(step_loss['one']) == 1
  one, eight = (json.load(open(os.path.join(copies[n], 'summary.json')))['final'] for n in ('one', 'eight'))
  assert one['eval/examples'] == eight['eval/examples'] == 360
  assert one['eval/top1'] > 0.3  # a trained model, so the comparison means something
  assert eight['eval/loss'] == pytest.approx(one['eval/loss'], rel=1e-3)
  # The same small shifts can flip an example whose two best logits are nearly tied: accuracy may differ by
  # at most one of the 360 examples.
  for key in ('eval/top1', 'eval/top5'):
    assert abs(eight[key] - one[key]) <= 1 / 360 + 1e-7, key
