"""Metric writers: TensorBoard event files and `metrics.jsonl`, written by process 0 only.

TensorBoard events are written with the tensorboard package's own protos and record format (v2 tensor
summaries, as tf.summary writes them), never through TensorFlow: accelerator boxes and TPU runtimes lack it,
and importing it would add seconds to the start of every run.
"""
from __future__ import annotations

import io
import itertools
import json
import os
import socket
import time
from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image

from lightcls import files

_file_ids = itertools.count()


class JsonlWriter:
  """Appends one JSON object per write to a file: {"step": ..., "time": ..., "train/loss": ...}."""

  def __init__(self, path: str, keep_until: int | None = None):
    self.path = path
    if keep_until is not None:
      self._drop_after(keep_until)
    self._file = open(path, 'a')

  def _drop_after(self, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: drop their lines so history reads as one run.
    A line cut short by a killed process is dropped too (it can only be the last)."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [(line, _parsed(line)) for line in f]
    kept = ''.join(line for line, row in rows if row is not None and row.get('step', 0) <= step)
    files.write_text(self.path, kept)

  def _write(self, record: Mapping[str, Any]) -> None:
    self._file.write(json.dumps(record) + '\n')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._write({'step': int(step), 'time': time.time(), **{k: float(v) for k, v in scalars.items()}})

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._write({'step': int(step), 'time': time.time(), **texts})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._write({'step': 0, 'time': time.time(), 'hparams': dict(hparams)})

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self.flush()
    self._file.close()


def _parsed(line: str) -> dict | None:
  try:
    return json.loads(line)
  except json.JSONDecodeError:
    return None


def _event_files(logdir: str) -> list[str]:
  """The event files TensorBoard reads in `logdir` (those with 'tfevents' in the name), in its order."""
  if not os.path.isdir(logdir):
    return []
  return sorted(name for name in os.listdir(logdir) if 'tfevents' in name)


def truncate_events(logdir: str, step: int) -> None:
  """Drops the summaries of steps after `step` from the event files in `logdir` (a resumed run writes them
  again; TensorBoard would show both), keeping each (tag, step) once.

  The kept summaries go to one new file, written under a temporary name and renamed into place, and only then
  are the old files deleted: a process killed in between leaves duplicates that the next call removes, never
  a gap. A record cut short by a killed writer ends its file's history (TensorBoard reads it the same way).
  """
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.compat.proto import event_pb2, summary_pb2
  names = _event_files(logdir)
  kept, seen, dropped = [], set(), False
  for name in names:
    for event in event_file_loader.EventFileLoader(os.path.join(logdir, name)).Load():
      if not event.HasField('summary'):
        continue  # file headers; the new file gets its own
      values = [v for v in event.summary.value if event.step <= step and (v.tag, event.step) not in seen]
      dropped |= len(values) < len(event.summary.value)
      seen.update((v.tag, event.step) for v in values)
      if values:
        kept.append(event_pb2.Event(wall_time=event.wall_time, step=event.step,
                                    summary=summary_pb2.Summary(value=values)))
  if not dropped:
    return
  # Named after the oldest file, so it sorts before the files the resumed run writes next.
  history = f'events.out.tfevents.{names[0].split(".")[3]}.lightcls-history'
  if kept:  # (the temporary name lacks 'tfevents': TensorBoard must not read it half-written)
    temporary = os.path.join(logdir, f'.lightcls-history.{os.getpid()}.tmp')
    _write_events(temporary, kept)
    os.replace(temporary, os.path.join(logdir, history))
  for name in names:
    if name != history or not kept:
      os.remove(os.path.join(logdir, name))


def _records(f, wall_time: float):
  """A record writer on the open file `f`, after the header event every TensorBoard event file starts with."""
  from tensorboard.compat.proto import event_pb2
  from tensorboard.summary.writer.record_writer import RecordWriter
  records = RecordWriter(f)
  records.write(event_pb2.Event(wall_time=wall_time, file_version='brain.Event:2').SerializeToString())
  return records


def _write_events(path: str, events: list) -> None:
  with open(path, 'wb') as f:
    records = _records(f, events[0].wall_time)
    for event in events:
      records.write(event.SerializeToString())
    f.flush()
    os.fsync(f.fileno())


class EventWriter:
  """A TensorBoard event file of `logdir`, written with the tensorboard package's protos and record format.

  Not through its EventFileWriter: that one opens files with tf.io.gfile, which imports TensorFlow wherever
  it is installed (3.7 s of every run's start on the development machine).
  """

  def __init__(self, logdir: str, suffix: str = ''):
    os.makedirs(logdir, exist_ok=True)
    # TensorBoard's own naming (time, host, process, a per-process counter), so files sort by creation.
    name = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_ids)}'
    self.path = os.path.join(logdir, name + suffix)
    self._file = open(self.path, 'wb')
    self._records = _records(self._file, time.time())

  def write_summary(self, step: int, summary) -> None:
    """One Summary proto at `step`, handed to the OS at once so a TensorBoard watching the run sees it."""
    from tensorboard.compat.proto import event_pb2
    self._records.write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())
    self._file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    for tag, value in scalars.items():
      self.write_summary(step, scalar_pb(tag, float(value)))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    from tensorboard.plugins.text.summary_v2 import text_pb
    for tag, text in texts.items():
      self.write_summary(step, text_pb(tag, text))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb
    self.write_summary(0, hparams_pb(dict(hparams)))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """uint8 (N, H, W, C) batches as TensorBoard image summaries (the v2 layout: width, height, PNGs)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.image import metadata
    from tensorboard.util import tensor_util
    for tag, batch in images.items():
      batch = np.asarray(batch)
      content = [str(batch.shape[2]).encode(), str(batch.shape[1]).encode(), *map(png_bytes, batch)]
      value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(tag, ''),
                                        tensor=tensor_util.make_tensor_proto(content))
      self.write_summary(step, summary_pb2.Summary(value=[value]))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def png_bytes(image: np.ndarray) -> bytes:
  """An (H, W, C) uint8 image as PNG file bytes."""
  out = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format='PNG')
  return out.getvalue()


class MultiWriter:
  """Sends every write to each writer that takes it (images go to TensorBoard only)."""

  def __init__(self, writers: list):
    self.writers = writers

  def __getattr__(self, name: str):
    def each(*args, **kwargs):
      for writer in self.writers:
        if hasattr(writer, name):
          getattr(writer, name)(*args, **kwargs)
    return each


def create_writer(workdir: str, keep_until: int | None = None) -> MultiWriter:
  """Writers for TensorBoard (`workdir/tensorboard`) and `workdir/metrics.jsonl`; none off process 0.

  `keep_until`: first drop what either holds of later steps (a run resuming from that step's checkpoint
  redoes them; -1 for a run starting over), so the history reads as one uninterrupted run.
  """
  if jax.process_index() != 0:
    return MultiWriter([])
  logdir = os.path.join(workdir, 'tensorboard')
  if keep_until is not None:
    truncate_events(logdir, keep_until)
  return MultiWriter([EventWriter(logdir), JsonlWriter(os.path.join(workdir, 'metrics.jsonl'), keep_until)])


def flat_hparams(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """A nested config as {'optimizer.lr': 0.001, ...} with TensorBoard-friendly values."""
  out = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flat_hparams(value, name + '.'))
    elif isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = str(value)
  return out
