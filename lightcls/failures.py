"""How a run stops when it cannot go on: errors that name the problem and the fix, and the preemption notice
(SIGTERM) that makes it checkpoint before it exits. Whatever stops a run, the files it wrote before stay intact:
checkpoints are committed by rename, and metrics/summaries are replaced whole (files.py)."""
from __future__ import annotations

import errno
import os
import signal
import threading
from typing import Iterator

import jax
import ml_collections
from absl import logging

# Exit status of a run stopped by SIGTERM after its checkpoint (128 + SIGTERM, as a shell reports a process
# the signal ended): schedulers that requeue preempted jobs recognise it.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM

_WRITE_ERRNOS = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
                 errno.EFBIG: 'a file outgrew the file size limit (ulimit -f)',
                 errno.EROFS: 'the file system is read-only', errno.EACCES: 'permission denied',
                 errno.EPERM: 'operation not permitted'}
# The same failures as C++ libraries (TensorStore, under Orbax) word them in their own exceptions.
_WRITE_TEXTS = {os.strerror(code): why for code, why in _WRITE_ERRNOS.items()}


class RunError(RuntimeError):
  """A run that cannot go on; the message says why and what to do."""


class Preempted(Exception):
  """A SIGTERM (preemption notice) arrived: the run saved a checkpoint of `step` and stopped. Running the same
  command again resumes from it."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f'Preempted (SIGTERM): saved the checkpoint of step {step} in {workdir}/checkpoints and '
                     'stopped. Run the same command again to resume.')
    self.step = step


class NonFinite(FloatingPointError):
  """The loss or the gradient norm became NaN or infinite at `step`."""

  def __init__(self, step: int):
    super().__init__(f'The training loss or gradient norm became NaN/Inf at step {step}.')
    self.step = step


def _chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, the errors it was raised from or during, and the members of exception groups, once each."""
  seen, pending = set(), [error]
  while pending:
    current = pending.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    pending += [current.__cause__, current.__context__, *getattr(current, 'exceptions', ())]


def write_failure(error: BaseException, workdir: str) -> str | None:
  """Why writing into `workdir` failed, if that is what `error` (or an error behind it) says; else None."""
  directory = os.path.abspath(workdir)
  for cause in _chain(error):
    if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
      if cause.filename and os.path.abspath(cause.filename).startswith(directory):
        return _WRITE_ERRNOS[cause.errno]
    elif directory in str(cause):  # (C++ libraries name the file in the message)
      for text, why in _WRITE_TEXTS.items():
        if text in str(cause):
          return why
  return None


def write_error(workdir: str, why: str, steps: list[int]) -> RunError:
  kept = f'the checkpoints of steps {steps} are intact' if steps else 'no checkpoint had been written yet'
  return RunError(f'Writing to {workdir} failed: {why}. Nothing written before was changed ({kept}). Free space '
                  '(or fix the permissions) and run the same command again to resume.')


def check_writable(workdir: str) -> None:
  """Creates `workdir` and writes a file in it; RunError naming the directory if it cannot (before any data
  is loaded or program compiled)."""
  probe = os.path.join(workdir, f'.lightcls-write-test-{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'wb') as f:
      f.write(b'lightcls')
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as error:
    raise RunError(f'Cannot write to the workdir {workdir!r}: {error.strerror or error}. Give a writable '
                   '--workdir (or free space / fix its permissions).') from None


def out_of_memory(error: BaseException) -> bool:
  """Whether `error` is an accelerator (or XLA:CPU) allocation failure."""
  text = str(error)
  return isinstance(error, jax.errors.JaxRuntimeError) and ('RESOURCE_EXHAUSTED' in text or
                                                            'Out of memory' in text)


def out_of_memory_error(config: ml_collections.ConfigDict, error: BaseException) -> RunError:
  """The advice for a device that ran out of memory: the batch sizes to try (multiples of the device count)."""
  devices, platform = jax.device_count(), jax.devices()[0].platform.upper()

  def halved(size: int) -> int:
    return max(devices, size // 2 // devices * devices)
  train, eval_ = config.train.batch_size, config.train.eval_batch_size
  first_line = str(error).splitlines()[0][:300]
  return RunError(
      f'The {platform} ran out of memory ({first_line}) with config.train.batch_size={train} ({train // devices} '
      f'per device) and config.train.eval_batch_size={eval_} at {config.data.image_size} px. Try '
      f'--config.train.batch_size={halved(train)} --config.train.eval_batch_size={halved(eval_)} (a smaller '
      'batch may want a lower optimizer.lr), or --config.model.dtype=bfloat16. Checkpoints written so far are '
      'intact; a changed batch size resumes from them.')


class PreemptionNotice:
  """Whether the run has been told to stop (SIGTERM, as cloud schedulers send before preempting).

  One process: a SIGTERM handler for the duration of the run (`with notice:`), which only sets a flag; the
  loop checkpoints at the next step and raises Preempted. Several processes: JAX's preemption sync point,
  where the coordination service hears any host's SIGTERM and all hosts agree on the step to stop at.
  """

  def __init__(self):
    self.received, self._previous = False, None

  def __enter__(self) -> 'PreemptionNotice':
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.received = True
    logging.warning('SIGTERM received: the run saves a checkpoint after the current step and stops.')

  def reached(self, step: int) -> bool:
    """Whether to checkpoint at `step` and stop; in a multi-process run every process must ask at every step."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received
