"""The command line: bad overrides fail at once, with a message naming the key, and write nothing."""
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize('override,expected', [
    ('--config.optimzer.lr=1', "config has no key 'optimzer'. Did you mean config.optimizer?"),
    ('--config.model.name=ghostnt', "config.model.name='ghostnt' is not one of ['efficientnet_b0', "),
    ('--config.train.batch_size=abc', 'invalid literal for int()'),
    ('--config.freeze.trainable=head', "config.freeze.trainable='head' is not one of ['all', 'classifier', "),
    ('--config.init.checkpoint=/no/such/weights.pth',
     "config.init.checkpoint='/no/such/weights.pth': no such file or directory"),
    ('--config.model.drop_path=0.1', "model.drop_path=0.1 is not an option of ghostnet"),
])
def test_a_bad_override_fails_at_once_with_a_message_naming_the_key(tmp_path, override, expected):
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'lightcls.main', '--config=configs/quickstart.py', f'--workdir={workdir}', override]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert expected in result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()  # nothing written
