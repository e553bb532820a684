"""Metric writers: TensorBoard event files and `metrics.jsonl`, written by process 0 only.

With TensorFlow installed, TensorBoard events go through clu's SummaryWriter; without it (accelerator
boxes, TPU runtimes), through an equivalent writer built on the tensorboard package alone. Both write v2
tensor summaries, so TensorBoard (and tests) read them the same way.
"""
from __future__ import annotations

import io
import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image

from lightcls import files


class JsonlWriter:
  """Appends one JSON object per write to a file: {"step": ..., "time": ..., "train/loss": ...}."""

  def __init__(self, path: str, resume_step: int | None = None):
    self.path = path
    if resume_step is not None:
      self._drop_after(resume_step)
    self._file = open(path, 'a')

  def _drop_after(self, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: drop their lines so history reads as one run."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get('step', 0) <= step]
    files.write_text(self.path, ''.join(kept))

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


class EventWriter:
  """TensorBoard event files without TensorFlow (the protos and file writer of the tensorboard package)."""

  def __init__(self, logdir: str):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._writer = EventFileWriter(logdir)

  def _add(self, step: int, summary) -> None:
    from tensorboard.compat.proto import event_pb2
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    for tag, value in scalars.items():
      self._add(step, scalar_pb(tag, float(value)))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    from tensorboard.plugins.text.summary_v2 import text_pb
    for tag, text in texts.items():
      self._add(step, text_pb(tag, text))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb
    self._add(0, hparams_pb(dict(hparams)))

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
      self._add(step, summary_pb2.Summary(value=[value]))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def png_bytes(image: np.ndarray) -> bytes:
  """An (H, W, C) uint8 image as PNG file bytes."""
  out = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format='PNG')
  return out.getvalue()


def tensorboard_writer(logdir: str):
  """clu's SummaryWriter when TensorFlow is importable, else the TF-free EventWriter."""
  try:
    from clu.metric_writers import SummaryWriter  # imports TensorFlow
  except ImportError:
    return EventWriter(logdir)
  return SummaryWriter(logdir)


class MultiWriter:
  """Sends every write to each writer that takes it (images go to TensorBoard only). clu's MultiWriter
  needs TF at import, so this is ours."""

  def __init__(self, writers: list):
    self.writers = writers

  def __getattr__(self, name: str):
    def each(*args, **kwargs):
      for writer in self.writers:
        if hasattr(writer, name):
          getattr(writer, name)(*args, **kwargs)
    return each


def create_writer(workdir: str, resume_step: int | None = None) -> MultiWriter:
  """Writers for TensorBoard (`workdir/tensorboard`) and `workdir/metrics.jsonl`; none off process 0."""
  if jax.process_index() != 0:
    return MultiWriter([])
  return MultiWriter([tensorboard_writer(os.path.join(workdir, 'tensorboard')),
                      JsonlWriter(os.path.join(workdir, 'metrics.jsonl'), resume_step)])


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
