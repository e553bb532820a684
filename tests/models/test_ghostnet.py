import jax
import jax.numpy as jnp
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
