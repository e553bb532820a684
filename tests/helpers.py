"""Shared setup of the end-to-end tests: one small configuration (GhostNet 1.0, 32x32 grayscale digits,
10 classes, batch 16) used in process and through `python -m lightcls.main`, so the persistent compilation
cache compiles its train and eval steps once for the whole suite."""
import json
import os
import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from configs import quickstart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {'train.batch_size': 16, 'train.eval_batch_size': 16, 'train.log_every_steps': 20,
         'train.total_epochs': 1.0, 'schedule.milestones_epochs': ()}


def small_config(**overrides):
  config = quickstart.get_config()
  for key, value in {**SMALL, **overrides}.items():
    section, name = key.split('.')
    config[section][name] = value
  return config


def main_args(workdir, **overrides):
  """The arguments of `python -m lightcls.main` for the small config with `overrides` in `workdir`."""
  return ['--config=configs/quickstart.py', f'--workdir={workdir}',
          *(f'--config.{k}={v!r}' if isinstance(v, tuple) else f'--config.{k}={v}'
            for k, v in {**SMALL, **overrides}.items())]


def run_main(workdir, env=None, **overrides):
  cmd = [sys.executable, '-m', 'lightcls.main', *main_args(workdir, **overrides)]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})})


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def tensorboard_scalars(logdir):
  """{tag: {step: value}} of the train/ and eval/ scalars in a TensorBoard log directory."""
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return {tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
          for tag in acc.Tags()['tensors'] if tag.startswith(('train/', 'eval/'))}


def digits_subset():
  """64 training digits (4 steps of 16 an epoch) and 100 eval digits, as a dataset for `dataset=`."""
  import numpy as np
  from sklearn import datasets

  from lightcls.data import sources
  digits = datasets.load_digits()
  pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
  return sources.from_arrays(pixels[:64], digits.target[:64], pixels[1000:1100], digits.target[1000:1100],
                             [str(d) for d in range(10)])
