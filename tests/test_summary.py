import subprocess
import sys

import pytest

from configs import default
from lightcls import summary

# (config overrides, input size, REFERENCE.md MACs in millions): conv + matmul multiply-accumulates, batch 1.
REFERENCE_MACS = [
    (dict(name='ghostnet', width=0.5), 224, 42.3),
    (dict(name='ghostnet', width=1.0), 224, 141.2),
    (dict(name='ghostnet', width=1.3), 224, 227.0),
    (dict(name='efficientnet_b0'), 224, 385.8),
    (dict(name='efficientnet_b1'), 240, 686.8),
    (dict(name='efficientnet_b2'), 260, 993.6),
    (dict(name='efficientnet_b3'), 300, 1827.1),
    (dict(name='efficientnet_b4'), 380, 4393.8),
    (dict(name='efficientnet_b5'), 456, 10266.4),
    (dict(name='efficientnet_b6'), 528, 19067.6),
    (dict(name='efficientnet_b7'), 600, 37745.9),
    (dict(name='mobilenet_v1', width=1.0), 224, 568.7),
    (dict(name='mobilenet_v1', width=0.75), 224, 325.4),
    (dict(name='mobilenet_v2', width=1.0), 224, 300.8),
    (dict(name='mobilenet_v3_large', width=1.0), 224, 216.6),
    (dict(name='mobilenet_v3_large', width=0.75), 224, 154.6),
    (dict(name='mobilenet_v3_small', width=1.0), 224, 56.5),
    (dict(name='linear'), 224, 224 * 224 * 3 * 1000 / 1e6),  # not in REFERENCE.md: pixels x classes
]


def model_config(overrides):
  config = default.get_config()
  config.model.update(overrides)
  return config


@pytest.mark.parametrize('overrides,size,reference', REFERENCE_MACS,
                         ids=[f"{o['name']}-{o.get('width', 1.0)}" for o, _, _ in REFERENCE_MACS])
def test_macs_from_xla_cost_analysis_within_2_percent_of_reference(overrides, size, reference):
  model = summary.summary_model(model_config(overrides), num_classes=1000)
  rows = summary.block_rows(model, (size, size, 3))
  assert sum(r.macs for r in rows) / 1e6 == pytest.approx(reference, rel=0.02)


def test_mac_count_includes_the_padding_taps_of_a_convolution():
  # A 3x3 'same' convolution of a 4x4 map, 2 -> 5 channels: 16 outputs x 9 taps x 2 x 5, zeros included.
  import flax.linen as nn
  import jax.numpy as jnp

  class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(5, (3, 3), padding=1, use_bias=False, name='conv')(x)

  variables = {'params': {'conv': {'kernel': jnp.zeros((3, 3, 2, 5))}}}
  assert summary.macs_by_block(Conv(), variables, (4, 4, 2), ['conv']) == {'conv': 16 * 9 * 2 * 5}


def test_block_rows_cover_every_parameter_in_forward_order():
  model = summary.summary_model(model_config(dict(name='ghostnet', width=0.5)), num_classes=10)
  rows = summary.block_rows(model, (32, 32, 1))
  assert [r.name for r in rows[:3]] == ['stem', 'block0', 'block1']
  assert rows[-1].name == 'classifier' and rows[-1].shape == (10,)
  assert rows[0].shape == (16, 16, 8)   # stride 2, 16 * 0.5 channels
  # REFERENCE.md's ghostnet_050 count with 10 classes instead of 1000 (a 1280-wide classifier) and one
  # input channel instead of three (a 3x3 stem of 8 filters).
  assert sum(r.params for r in rows) == 2_587_292 - 990 * 1_281 - 2 * 9 * 8


def test_summary_command_prints_the_table_and_latency():
  result = subprocess.run(
      [sys.executable, '-m', 'lightcls.summary', '--config=configs/quickstart.py', '--config.model.width=0.5',
       '--image_size=32', '--num_classes=10', '--repeats=2'],
      capture_output=True, text=True, timeout=600, check=True)
  assert 'block1' in result.stdout and 'total' in result.stdout
  assert 'ms/image at batch 1' in result.stdout and 'images/s at batch 32' in result.stdout


def test_every_registered_model_has_a_reference_mac_row():
  from lightcls import models
  assert {overrides['name'] for overrides, _, _ in REFERENCE_MACS} == set(models.MODELS)
