import collections
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.util import tensor_util

from lightcls import writers
from tests.helpers import tensorboard_scalars


def exercise(writer):
  writer.write_hparams({'optimizer.lr': 0.001, 'model.name': 'ghostnet'})
  writer.write_scalars(1, {'train/loss': 2.5, 'train/top1': 0.25})
  writer.write_scalars(2, {'eval/top1': 0.5})
  writer.close()


def test_event_writer_without_tensorflow_is_readable_by_tensorboard(tmp_path):
  exercise(writers.EventWriter(str(tmp_path)))
  assert tensorboard_scalars(str(tmp_path)) == {'train/loss': {1: 2.5}, 'train/top1': {1: 0.25},
                                                'eval/top1': {2: 0.5}}


@pytest.mark.parametrize('tensorflow', ['absent', 'installed'])
def test_a_run_writes_every_kind_of_summary_without_importing_tensorflow(tmp_path, tensorflow):
  # Accelerator boxes lack TensorFlow; where it is installed, tensorboard's own EventFileWriter would import
  # it (seconds per run).
  code = ("import sys\n"
          + ("sys.modules['tensorflow'] = None\n" if tensorflow == 'absent' else '') +
          "import numpy as np\n"
          "from lightcls import writers, train, main\n"
          f"writer = writers.create_writer({str(tmp_path)!r})\n"
          "writer.write_hparams({'optimizer.lr': 0.1})\n"
          "writer.write_scalars(1, {'train/loss': 2.5})\n"
          "writer.write_texts(1, {'config': 'lr: 0.1'})\n"
          "writer.write_images(1, {'images/augmented': np.zeros((2, 4, 4, 3), np.uint8)})\n"
          "writer.close()\n"
          "print(sorted(name for name, module in sys.modules.items()\n"
          "             if module is not None and name.split('.')[0] == 'tensorflow'))")
  run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert run.stdout.strip() == '[]'
  assert tensorboard_scalars(str(tmp_path / 'tensorboard')) == {'train/loss': {1: 2.5}}


def test_event_writer_hands_each_summary_to_tensorboard_before_it_is_closed(tmp_path):
  writer = writers.EventWriter(str(tmp_path))
  writer.write_scalars(7, {'train/loss': 1.5})
  assert tensorboard_scalars(str(tmp_path)) == {'train/loss': {7: 1.5}}
  writer.close()


def test_jsonl_writer_on_resume_drops_the_lines_after_the_checkpoint(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  first = writers.JsonlWriter(path)
  for step in (1, 2, 3, 4):
    first.write_scalars(step, {'train/loss': float(step)})
  first.close()
  resumed = writers.JsonlWriter(path, keep_until=2)
  resumed.write_scalars(3, {'train/loss': 30.0})
  resumed.close()
  rows = [json.loads(line) for line in open(path)]
  assert [(r['step'], r['train/loss']) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_jsonl_writer_drops_a_line_cut_short_by_a_killed_process(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "train/loss": 1.0}\n{"step": 2, "train/lo')
  writers.JsonlWriter(str(path), keep_until=5).close()
  assert [json.loads(line) for line in open(path)] == [{'step': 1, 'train/loss': 1.0}]


def test_truncated_events_keep_each_tag_and_step_once_up_to_the_checkpoint(tmp_path):
  logdir = str(tmp_path)
  first = writers.EventWriter(logdir)
  first.write_hparams({'optimizer.lr': 0.001})
  for step in (1, 2, 3, 4):
    first.write_scalars(step, {'train/loss': float(step)})
  first.write_images(2, {'images/confusion_matrix': np.zeros((1, 4, 4, 3), np.uint8)})
  first.close()
  writers.truncate_events(logdir, 2)  # resumed from step 2: redoes 3 and 4
  again = writers.EventWriter(logdir)
  again.write_scalars(3, {'train/loss': 30.0})
  again.close()
  writers.truncate_events(logdir, 3)  # nothing past 3: the files stay as they are
  assert tensorboard_scalars(logdir) == {'train/loss': {1: 1.0, 2: 2.0, 3: 30.0}}
  # Read raw, every event of every file: TensorBoard's accumulator would hide duplicated steps.
  steps = collections.defaultdict(list)
  for name in sorted(os.listdir(logdir)):
    for event in event_file_loader.EventFileLoader(os.path.join(logdir, name)).Load():
      for value in event.summary.value:
        steps[value.tag].append(event.step)
  assert steps['train/loss'] == [1, 2, 3] and steps['images/confusion_matrix'] == [2]
  assert steps['_hparams_/session_start_info'] == [0]


def test_truncated_events_of_a_run_starting_over_are_gone(tmp_path):
  exercise(writers.EventWriter(str(tmp_path)))
  writers.truncate_events(str(tmp_path), -1)
  assert not any('tfevents' in name for name in os.listdir(tmp_path))


def tensorboard_images(logdir):
  """{tag: [decoded uint8 images]} of the image summaries in a TensorBoard log directory."""
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return {tag: [np.asarray(Image.open(io.BytesIO(png))) for e in acc.Tensors(tag)
                for png in tensor_util.make_ndarray(e.tensor_proto)[2:]]
          for tag in acc.Tags()['tensors'] if tag.startswith('images/')}


def test_images_written_for_tensorboard_decode_back_to_the_same_pixels(tmp_path):
  batch = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  writer = writers.EventWriter(str(tmp_path))
  writer.write_images(3, {'images/augmented': batch})
  writer.close()
  decoded = tensorboard_images(str(tmp_path))['images/augmented']
  np.testing.assert_array_equal(np.stack(decoded), batch)
