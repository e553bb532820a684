import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls.models.ghostnet import GhostNet
from lightcls.models.layers import make_divisible


def count_params(model, size=224, channels=3):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))
  return sum(x.size for x in jax.tree.leaves(variables['params']))


# Trainable parameter counts of timm's ghostnet_050/_100/_130 (REFERENCE.md).
@pytest.mark.parametrize('width,num_classes,expected', [
    (0.5, 1000, 2_587_292),
    (1.0, 1000, 5_182_508),
    (1.3, 1000, 7_358_820),
    (0.5, 196, 1_557_368),
    (1.0, 196, 4_152_584),
    (1.3, 196, 6_328_896),
])
def test_parameter_count_equals_timm(width, num_classes, expected):
  assert count_params(GhostNet(num_classes=num_classes, width=width)) == expected


def test_grayscale_input_changes_only_the_stem():
  # The stem is a 3x3 conv with 16 filters: two input channels fewer remove 2 * 9 * 16 weights.
  rgb, gray = count_params(GhostNet(num_classes=10)), count_params(GhostNet(num_classes=10), channels=1)
  assert rgb - gray == 2 * 9 * 16


def test_make_divisible_follows_the_timm_rounding_rule():
  assert make_divisible(16 * 0.5, 4) == 8
  assert make_divisible(72 * 1.3, 4) == 92      # 93.6 -> 92 (within 10%)
  assert make_divisible(10, 8) == 16            # 8 would lose more than 10%, so one divisor more
  assert make_divisible(3, 8) == 8              # never below the divisor


def test_returns_logits_and_pre_logit_features():
  model = GhostNet(num_classes=7, width=0.5)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  logits, features = jax.eval_shape(lambda v: model.apply(v, x, return_features=True), variables)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert features.shape == (2, 1280)


def test_thesis_variant_parameter_counts_equal_seed_000():
  # Seed 000's GhostNet (bias-free linear + BatchNorm head, SE width c // 4), 196 classes (REFERENCE.md).
  for head_features, expected in [(320, 3_041_412), (640, 3_411_972), (960, 3_782_532),
                                  (1280, 4_153_092), (1600, 4_523_652)]:
    model = GhostNet(num_classes=196, head='thesis', head_features=head_features)
    assert count_params(model) == expected


def test_small_input_keeps_four_times_the_resolution_with_the_same_weights():
  x = jnp.zeros((1, 32, 32, 3))
  model, small = GhostNet(num_classes=10, width=0.5), GhostNet(num_classes=10, width=0.5, small_input=True)
  assert count_params(model, 32) == count_params(small, 32)
  last_map = lambda m: jax.eval_shape(
      lambda: m.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True))[1]['intermediates']
  assert last_map(model)['last']['__call__'][0].shape[1:3] == (1, 1)    # total stride 32
  assert last_map(small)['last']['__call__'][0].shape[1:3] == (4, 4)    # total stride 8


@pytest.mark.parametrize('width,timm_name', [(0.5, 'ghostnet_050'), (1.0, 'ghostnet_100'), (1.3, 'ghostnet_130')])
def test_logits_equal_timm_with_ported_random_weights(width, timm_name):
  from tests import reference
  from tests.models import equivalence
  torch_model = reference.timm().create_model(timm_name, num_classes=10).eval()
  model = GhostNet(num_classes=10, width=width)
  images = equivalence.random_images((2, 64, 64, 3))
  variables = equivalence.calibrated_port_from_timm(model, torch_model, images)
  logits, features = equivalence.lightcls_outputs(model, variables, images)
  ref_logits, ref_features = equivalence.timm_outputs(torch_model, images)
  # O(1) logits that depend on the image: not a comparison of constants or of near-zero numbers.
  assert np.abs(ref_logits).max() > 1.0 and np.ptp(ref_logits, axis=0).max() > 0.02
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
  np.testing.assert_allclose(features, ref_features, atol=1e-4, rtol=0)
