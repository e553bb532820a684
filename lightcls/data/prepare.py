"""Prepares a dataset's original files once, before training (training also does it on first use):

  python -m lightcls.data.prepare --source=cars --data_dir=/path/to/stanford_cars

Prints the prepared folder; progress (images/s, ETA) goes to stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from lightcls.data import cars

PREPARERS: dict[str, Callable[[str], str]] = {'cars': cars.prepare}  # source -> prepare(data_dir) -> folder


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m lightcls.data.prepare', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--source', required=True, choices=sorted(PREPARERS), help='the config.data.source')
  parser.add_argument('--data_dir', required=True, help='the directory of the original files (config.data.data_dir)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  try:
    print(PREPARERS[args.source](args.data_dir))
  except (FileNotFoundError, ValueError) as error:  # missing or damaged files: the message says which
    print(f'error: {error}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
