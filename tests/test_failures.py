"""Runs that cannot go on stop with a message naming the problem and the fix, and leave what they wrote before
intact: an unwritable workdir, a full disk, another model's checkpoint, NaN/Inf, a device out of memory, and
configs or data that cannot work (caught before anything is compiled)."""
import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls import checkpoint, config_utils, failures, train
from lightcls.data import sources
from tests.helpers import REPO, digits_subset, main_args, read_jsonl
from tests.test_lr_search import convex_config


def contents(workdir):
  """{relative path: sha256} of every file under `workdir`."""
  found = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return found


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory):
  """A workdir holding one epoch (89 steps) of logistic regression on 8x8 digits."""
  workdir = str(tmp_path_factory.mktemp('one_epoch'))
  train.train_and_evaluate(convex_config(**{'optimizer.lr': 0.05}), workdir)
  return workdir


def copy_of(workdir, tmp_path):
  import shutil
  return shutil.copytree(workdir, str(tmp_path / 'run'))


def test_an_unwritable_workdir_is_refused_before_the_data_is_loaded(tmp_path, monkeypatch):
  (tmp_path / 'a_file').write_text('')
  monkeypatch.setattr(train, 'set_up', lambda *a: pytest.fail('loaded and built before checking the workdir'))
  with pytest.raises(failures.RunError, match=r"Cannot write to the workdir '.*a_file/run': Not a directory\. "
                                              r'Give a writable --workdir'):
    train.train_and_evaluate(convex_config(), str(tmp_path / 'a_file' / 'run'))


@pytest.mark.parametrize('change, difference', [
    ({'data.image_size': 12}, r"params\['classifier'\]\['fc'\]\['kernel'\]: checkpoint \(64, 10\), this config \(144, 10\)"),
    ({'optimizer.name': 'adamw'}, r'the optimizer state'),
])
def test_a_checkpoint_of_another_model_is_refused_and_nothing_is_touched(one_epoch, tmp_path, change, difference):
  workdir = copy_of(one_epoch, tmp_path)
  before = contents(workdir)
  with pytest.raises(failures.RunError, match=rf"holds the checkpoint of step 89 of a run this config cannot "
                                              rf"continue \(its config.json has model.name='linear'\): .*"
                                              rf"{difference}.*Train this config in another --workdir"):
    train.train_and_evaluate(convex_config(**{'optimizer.lr': 0.05, 'train.total_epochs': 2.0, **change}), workdir)
  assert contents(workdir) == before


def test_another_class_count_is_refused(one_epoch, tmp_path):
  workdir = copy_of(one_epoch, tmp_path)
  before = contents(workdir)
  five = digits_subset()  # 5 classes instead of 10: another classifier
  five_classes = sources.from_arrays(five.train.images, five.train.labels % 5, five.eval.images,
                                     five.eval.labels % 5, [str(d) for d in range(5)])
  config = convex_config(**{'optimizer.lr': 0.05, 'data.source': 'arrays'})
  with pytest.raises(failures.RunError, match=r"\['classifier'\]\['fc'\]\['kernel'\]: checkpoint \(64, 10\), this config \(64, 5\)"):
    train.train_and_evaluate(config, workdir, dataset=five_classes)
  assert contents(workdir) == before


def test_a_full_disk_stops_with_a_message_and_the_earlier_checkpoints_intact(tmp_path):
  """The second epoch runs under a file size limit (ulimit -f) that the checkpoint's data cannot fit: writes
  past it fail with EFBIG, as they fail with ENOSPC on a full disk."""
  workdir = str(tmp_path)
  big = {'model.name': 'linear', 'data.image_size': 128, 'train.batch_size': 64, 'train.eval_batch_size': 64,
         'optimizer.lr': 1e-3}  # (a 128x128x1 -> 10 linear model: 2 MB of checkpoint, in files of 0.5 MB or more)
  command = [sys.executable, '-m', 'lightcls.main', *main_args(workdir, **big)]
  first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  before = contents(os.path.join(workdir, 'checkpoints'))
  limited = ['bash', '-c', 'ulimit -f 256 && exec "$@"', 'bash']  # 256 KiB per file
  second = subprocess.run([*limited, *command, '--config.train.total_epochs=2.0'], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert second.returncode == 1, second.stderr[-3000:]
  assert (f'lightcls: Writing to {workdir} failed: a file outgrew the file size limit (ulimit -f). Nothing written '
          'before was changed (the checkpoints of steps [22] are intact).') in second.stderr
  assert contents(os.path.join(workdir, 'checkpoints')) == {
      **before, **{k: v for k, v in contents(os.path.join(workdir, 'checkpoints')).items() if 'tmp' in k}}
  third = subprocess.run([*command, '--config.train.total_epochs=2.0'], cwd=REPO, capture_output=True, text=True,
                         timeout=600)  # space again: resumes
  assert third.returncode == 0 and 'Resumed from the checkpoint of step 22' in third.stderr, third.stderr[-3000:]
  assert [r['step'] for r in read_jsonl(workdir) if 'eval/top1' in r] == [22, 44]


# The first epoch at 0.05 (the fixture), then the same run resumed at a rate of 1e38: step 90 updates with it,
# and the loss of step 91, computed with those weights, overflows.
DIVERGING = {'optimizer.lr': 1e38, 'train.total_epochs': 2.0}


def test_nan_stops_naming_the_step_and_the_last_good_checkpoint(one_epoch, tmp_path):
  workdir = copy_of(one_epoch, tmp_path)
  with pytest.raises(failures.RunError, match=r'became NaN/Inf at step 91; the last good checkpoint is step 89 '
                                              rf'\({workdir}/checkpoints/89\)\. Lower config.optimizer.lr'):
    train.train_and_evaluate(convex_config(**DIVERGING), workdir)
  assert checkpoint.committed_steps(workdir) == [89]
  assert all(np.isfinite(r['train/loss']) for r in read_jsonl(workdir) if 'train/loss' in r)


def test_nan_with_on_nonfinite_restore_goes_back_and_continues_at_a_lower_rate(one_epoch, tmp_path):
  workdir = copy_of(one_epoch, tmp_path)
  config = convex_config(**DIVERGING, **{'train.on_nonfinite': 'restore', 'train.nonfinite_lr_factor': 1e-39})
  result = train.train_and_evaluate(config, workdir)
  assert result['steps'] == 178 and result.best_top1 > 0.5
  rows = read_jsonl(workdir)
  steps = [r['step'] for r in rows if 'train/loss' in r]
  assert steps == sorted(set(steps))  # the rows after the restored checkpoint were dropped, then written again
  assert all(np.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
  epoch_two = [r['train/learning_rate'] for r in rows if 'train/learning_rate' in r and r['step'] > 89]
  assert epoch_two == pytest.approx([0.1] * len(epoch_two), rel=1e-6)  # 1e38 x 1e-39


def test_a_device_out_of_memory_names_the_batch_size_to_try(one_epoch, tmp_path, monkeypatch):
  """XLA's own allocation failure (a 4 TiB buffer on this CPU) raised from the train step."""
  workdir = copy_of(one_epoch, tmp_path)
  before = contents(os.path.join(workdir, 'checkpoints'))
  huge = jax.jit(lambda x: jnp.zeros((2 ** 40,), jnp.float32) + x)
  compiled_parts = train.compiled_parts

  def out_of_memory_in_the_train_step(*args, **kwargs):
    parts = compiled_parts(*args, **kwargs)
    return parts._replace(train_step=lambda state, batch, lr: (huge(1.0), None))
  monkeypatch.setattr(train, 'compiled_parts', out_of_memory_in_the_train_step)
  with pytest.raises(failures.RunError, match=r'The CPU ran out of memory \(RESOURCE_EXHAUSTED: Out of memory '
                                              r'allocating .*\) with config.train.batch_size=16 \(16 per device\) '
                                              r'and config.train.eval_batch_size=64 at 8 px. Try '
                                              r'--config.train.batch_size=8 --config.train.eval_batch_size=32'):
    train.train_and_evaluate(convex_config(**{'optimizer.lr': 0.05, 'train.total_epochs': 2.0}), workdir)
  assert contents(os.path.join(workdir, 'checkpoints')) == before


def test_an_image_too_small_for_the_model_is_refused_before_compiling():
  from tests.helpers import small_config
  with pytest.raises(config_utils.ConfigError, match=r'config.data.image_size=16 is too small for ghostnet'):
    config_utils.validate(small_config(**{'data.image_size': 16}))
  config_utils.validate(small_config(**{'data.image_size': 16, 'model.small_input': True}))


def test_an_empty_split_is_refused_before_compiling(tmp_path, monkeypatch):
  digits = digits_subset()
  empty_eval = sources.from_arrays(digits.train.images, digits.train.labels, digits.eval.images[:0],
                                   digits.eval.labels[:0], [str(d) for d in range(10)])
  monkeypatch.setattr(train, 'compiled_parts', lambda *a: pytest.fail('compiled before checking the data'))
  with pytest.raises(config_utils.ConfigError, match=r'The eval split is empty'):
    train.train_and_evaluate(convex_config(**{'data.source': 'arrays'}), str(tmp_path), dataset=empty_eval)
