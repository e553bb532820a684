"""Command-line entry point: python -m lightcls.main --config=configs/X.py --workdir=DIR [--config.a.b=v ...]"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from lightcls import cli, config_utils, distributed, failures, train

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and metrics.jsonl.')
flags.mark_flags_as_required(['workdir'])


def main(argv: list[str]) -> None:
  cli.start(argv)
  try:
    distributed.initialize(FLAGS.config)
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (config_utils.ConfigError, failures.RunError) as e:
    logging.flush()
    sys.exit(f'lightcls: {e}')
  except failures.Preempted as e:
    logging.warning('%s', e)
    logging.flush()
    sys.exit(failures.PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
