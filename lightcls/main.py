"""Command-line entry point: python -m lightcls.main --config=configs/X.py --workdir=DIR [--config.a.b=v ...]"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lightcls import cli, config_utils, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (see configs/).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and metrics.jsonl.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(cli.OwnInfoOnly())
  cli.use_compilation_cache()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except config_utils.ConfigError as e:
    logging.flush()
    sys.exit(f'lightcls: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
