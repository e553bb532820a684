"""Files replaced whole: a reader, or a run killed mid-write, finds the old file or the new one, never half of
one; processes writing the same file at once (workers of one search) each use a temporary name of their own."""
from __future__ import annotations

import json
import os
from typing import Any, Callable


def replaced(path: str, write: Callable[[str], None]) -> None:
  """`write(temporary)` fills a temporary file beside `path`, which then takes its place in one rename."""
  temporary = f'{path}.{os.getpid()}.tmp'
  write(temporary)
  os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
  def write(temporary: str) -> None:
    with open(temporary, 'w') as f:
      f.write(text)
  replaced(path, write)


def read_json(path: str) -> Any | None:
  """The file's JSON, or None where there is no file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json(path: str, data: Any, indent: int = 2) -> None:
  write_text(path, json.dumps(data, indent=indent))
