"""A run killed after its first checkpoint resumes from it when the same command is run again."""
import json
import os
import signal
import time

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
