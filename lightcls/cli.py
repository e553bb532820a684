"""What every `python -m lightcls.X` command shares: flag parsing with one-line config errors, log filtering,
the persistent compilation cache, and a malloc that keeps XLA's step buffers."""
from __future__ import annotations

import ctypes
import importlib.util
import logging as python_logging
import os
import platform
import sys

from absl import flags
from ml_collections import config_flags

from lightcls import config_utils

FLAGS = flags.FLAGS


def define_config_flag(required: bool = True) -> None:
  """--config=configs/X.py (locked: a misspelt override is an error, not a new key) of every command."""
  config_flags.DEFINE_config_file('config', None, 'Path to a config file (see configs/).', lock_config=True)
  if required:
    flags.mark_flags_as_required(['config'])


def _config_file(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _bad_override_message(argv: list[str]) -> str | None:
  """Names the first --config.X override whose key is not in the config file, with the valid keys."""
  path = _config_file(argv)
  if not path:
    return None
  try:
    spec = importlib.util.spec_from_file_location('lightcls_config_file', path.split(':', 1)[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # the config file itself is broken: the original error says how
    return None
  for arg in argv:
    if arg.startswith('--config.'):
      message = config_utils.explain_bad_override(config, arg)
      if message:
        return message
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error instead of a traceback for a misspelt config key."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'lightcls: {e}')
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    sys.exit(f'lightcls: {_bad_override_message(argv) or e}')


class OwnInfoOnly:
  """Keeps INFO records from lightcls only: Orbax and JAX log every checkpoint and compile at INFO."""

  def filter(self, record) -> bool:
    return record.levelno > python_logging.INFO or f'{os.sep}lightcls{os.sep}' in record.pathname


def start(argv: list[str]) -> None:
  """What a command without positional arguments does first: refuse stray ones, keep INFO logs to
  lightcls's own, and use the compilation cache."""
  from absl import app, logging
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(OwnInfoOnly())
  keep_freed_host_memory()
  use_compilation_cache()


def interactive() -> None:
  """What a notebook calls first: INFO logging (each epoch's evaluation), lightcls's own lines only, and the
  compilation cache. (In a kernel absl's records reach a root-logger handler: the filter goes on the logger.)"""
  from absl import logging
  logging.set_verbosity(logging.INFO)
  logger = logging.get_absl_logger()
  if not any(isinstance(f, OwnInfoOnly) for f in logger.filters):
    logger.addFilter(OwnInfoOnly())
  keep_freed_host_memory()
  use_compilation_cache()


# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_host_memory() -> bool:
  """Makes glibc's malloc keep freed memory for reuse, and JAX run CPU computations one at a time; returns
  whether it did (False on other C libraries and under a preloaded allocator such as tcmalloc, which keeps
  freed memory already).

  XLA:CPU allocates each execution's scratch buffer (2 GB for a MobileNetV3-Large train step at 224 px,
  batch 32) and frees it when the step ends. glibc serves an allocation that large from mmap and gives it
  back with munmap, so every step touched fresh pages: 500,000 page faults and a 0.2 s munmap, a third of
  that step (experiments/RESULTS.md, "CPU speed"). With mmap and trimming off, the main arena's heap keeps
  the pages; the process holds its peak memory instead.

  Only the main arena can hold a buffer that large, and a thread allocates from its own arena. Dispatched
  in order, the thread that calls the computation allocates the buffer (no page faults per step, measured).
  Dispatched asynchronously, a worker thread allocated it, and the next step could allocate its buffer before
  that thread had freed the last one: the heap grew by another buffer (3-5 s steps, and up to 7 GB where 3 GB do). In order that is
  rarer: 0-3 of 100 executions on a loaded 2-core machine, against 0-5 asynchronously. Train steps
  do not wait on the host: batches are prepared on their own threads. Other threads keep their own arenas:
  an earlier single arena for every thread made XLA's compiler threads queue for its lock (XLA's part of
  GhostNet 1.0's train-step compile at 224 px: 16-21 s against 11-15 s).
  """
  preloaded = 'malloc' in os.environ.get('LD_PRELOAD', '')
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc' or preloaded:
    return False
  libc = ctypes.CDLL('libc.so.6')
  # -1 for the trim threshold: never return the top of the heap (mallopt(3)).
  kept = all(libc.mallopt(param, value) == 1 for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  if kept:
    import jax  # here: the C library checks above need no JAX
    # Read when JAX creates its CPU client: in a process that has computed already, this changes nothing.
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  return kept


def use_compilation_cache() -> None:
  # Compiling a convnet takes tens of seconds on CPU; reuse compiled programs across runs.
  import jax  # here: predicting with an exported model runs without JAX
  jax.config.update('jax_compilation_cache_dir',
                    os.environ.get('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/lightcls/jax')))


def duration(seconds: float) -> str:
  """'1h02m03s', or '2m03s' under an hour: progress lines, ETAs, run times."""
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'
