"""A progress bar on stderr for long one-off jobs (extracting archives): count, rate and time left."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
  if seconds == float('inf'):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


class ProgressBar:
  """`what: 1234/16185 [###.......] 8% | 812 images/s | ETA 0:00:18`, redrawn in place on a terminal; in a
  log file (no terminal) one line every `every` seconds, so batch-job logs stay short."""

  def __init__(self, what: str, total: int, stream: TextIO | None = None, every: float = 10.0):
    self.what, self.total = what, total
    self.stream = stream or sys.stderr
    self.terminal = self.stream.isatty()
    self.every = 0.2 if self.terminal else every
    self.start = self.last = time.perf_counter()

  def line(self, done: int, now: float) -> str:
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate else float('inf')
    filled = 30 * done // max(self.total, 1)
    return (f'{self.what}: {done}/{self.total} [{"#" * filled}{"." * (30 - filled)}] '
            f'{100 * done // max(self.total, 1)}% | {rate:.0f} images/s | ETA {_duration(eta)}')

  def update(self, done: int) -> None:
    now = time.perf_counter()
    if now - self.last >= self.every or done == self.total:
      self.last = now
      self.stream.write(('\r' if self.terminal else '') + self.line(done, now) + ('' if self.terminal else '\n'))
      self.stream.flush()

  def __enter__(self) -> 'ProgressBar':
    return self

  def __exit__(self, *exc) -> None:
    if self.terminal:
      self.stream.write('\n')
      self.stream.flush()
