"""layers.BatchNorm (hand-written backward pass) against Flax's nn.BatchNorm with the two-pass variance."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls.models import layers


def _variables_and_input(dtype):
  # A channel mean far above its spread, where a one-pass variance or a careless backward pass loses digits.
  x = (jax.random.normal(jax.random.PRNGKey(0), (4, 5, 7, 6)) * 3 + 40).astype(dtype)
  reference = nn.BatchNorm(momentum=0.9, epsilon=1e-3, use_fast_variance=False)
  variables = reference.init(jax.random.PRNGKey(1), x, use_running_average=False)
  # Non-trivial scale, bias and running statistics, so that a mix-up shows.
  variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.PRNGKey(2), v.shape, minval=0.5, maxval=2),
                           variables)
  return variables, x


def _outputs(apply, variables, x):
  g = jax.random.normal(jax.random.PRNGKey(3), x.shape)

  def loss(variables, x):
    y, updates = apply(variables, x)
    return jnp.sum(y.astype(jnp.float32) * g), (y, updates)

  (_, (y, updates)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables, x)
  return y, updates, grads


@pytest.mark.parametrize('act', [None, 'relu6', 'swish', 'hard_swish'])
def test_training_mode_equals_flax_batch_norm_then_activation_outputs_statistics_and_gradients(act):
  variables, x = _variables_and_input(jnp.float32)
  ours = layers.BatchNorm(training=True, momentum=0.9, epsilon=1e-3, act=act)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3, use_fast_variance=False)
  activation = layers.ACTIVATIONS[act] if act else (lambda y: y)

  def flax_apply(v, x):
    y, updates = flax_bn.apply(v, x, mutable=['batch_stats'])
    return activation(y), updates

  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, variables)
  got = jax.jit(lambda v, x: _outputs(lambda v, x: ours.apply(v, x, mutable=['batch_stats']), v, x))(variables, x)
  want = jax.jit(lambda v, x: _outputs(flax_apply, v, x))(variables, x)
  for ours_leaf, flax_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(ours_leaf, flax_leaf, rtol=1e-5, atol=1e-5 * float(jnp.abs(flax_leaf).max()))
  assert float(jnp.abs(got[2][1]).max()) > 0  # the input gradient is compared, not two zeros


class _Net(nn.Module):
  """A top-level block named 'block' holding one BatchNorm, as the models' blocks do."""
  training: bool
  frozen_blocks: tuple[str, ...]

  @nn.compact
  def __call__(self, x):
    return _Block(self.training, self.frozen_blocks, name='block')(x)


class _Block(nn.Module):
  training: bool
  frozen_blocks: tuple[str, ...]

  @nn.compact
  def __call__(self, x):
    return layers.BatchNorm(training=self.training, momentum=0.9, epsilon=1e-3, frozen_blocks=self.frozen_blocks,
                            name='bn')(x)


@pytest.mark.parametrize('training,frozen_blocks', [(False, ()), (True, ('block',))])
def test_evaluation_and_frozen_blocks_use_and_keep_the_running_statistics(training, frozen_blocks):
  variables, x = _variables_and_input(jnp.float32)
  nested = {collection: {'block': {'bn': tree}} for collection, tree in variables.items()}
  y, updates = _Net(training, frozen_blocks).apply(nested, x, mutable=['batch_stats'])
  flax_bn = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-3)
  np.testing.assert_allclose(y, flax_bn.apply(variables, x), rtol=1e-6, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'], nested['batch_stats'])


def test_bfloat16_input_gives_bfloat16_output_and_float32_statistics_close_to_float32():
  variables, x32 = _variables_and_input(jnp.float32)
  x16 = x32.astype(jnp.bfloat16)
  ours = layers.BatchNorm(training=True, momentum=0.9, epsilon=1e-3, dtype=jnp.bfloat16)
  y16, updates16, grads16 = jax.jit(lambda v, x: _outputs(
      lambda v, x: ours.apply(v, x, mutable=['batch_stats']), v, x))(variables, x16)
  # The reference: float32 arithmetic on the same (bfloat16-rounded) input.
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3, use_fast_variance=False)
  y32, updates32, grads32 = jax.jit(lambda v, x: _outputs(
      lambda v, x: flax_bn.apply(v, x, mutable=['batch_stats']), v, x))(variables, x16.astype(jnp.float32))
  assert y16.dtype == grads16[1].dtype == jnp.bfloat16
  assert {leaf.dtype for leaf in jax.tree.leaves((updates16, grads16[0]))} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=2e-2 * float(jnp.abs(y32).max()))
  for ours_leaf, flax_leaf in zip(jax.tree.leaves((updates16, grads16)), jax.tree.leaves((updates32, grads32))):
    np.testing.assert_allclose(np.asarray(ours_leaf, np.float32), flax_leaf,
                               atol=2e-2 * float(jnp.abs(flax_leaf).max()))


@pytest.mark.parametrize('name, overrides', [
    ('ghostnet', {'width': 0.5, 'head': 'thesis'}),  # the thesis head's BatchNorm follows no convolution: kept
    ('mobilenet_v3_small', {'width': 0.5}),
    ('efficientnet_b0', {'width': 0.25}),
])
def test_folded_batch_norm_model_equals_the_evaluation_mode_model(name, overrides):
  import dataclasses

  from configs import default
  from lightcls import models
  config = default.get_config().model
  config.update(name=name, **overrides)
  model = models.create_model(config, 7)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  # Random weights, and BatchNorm parameters and statistics away from their initial 0 / 1, so that a mix-up
  # shows (drawn with numpy: compiling GhostNet's initialiser takes 20 s).
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32) if v.ndim == 1
                           else rng.normal(0, 1 / np.sqrt(np.prod(v.shape[:-1])), v.shape).astype(np.float32),
                           jax.eval_shape(model.init, jax.random.PRNGKey(1), x))
  folded_model = model.clone(layer=dataclasses.replace(model.layer, fold_batch_norm=True))
  folded = layers.folded_batch_norm(variables, config.bn_eps)
  assert jax.tree.map(jnp.shape, folded) == jax.tree.map(jnp.shape, jax.eval_shape(folded_model.init, jax.random.PRNGKey(1), x))
  want = jax.jit(model.apply)(variables, x)
  got = jax.jit(folded_model.apply)(folded, x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
  batch_norms = sum(jax.tree_util.keystr(path).endswith("['mean']")
                    for path, _ in jax.tree_util.tree_leaves_with_path(folded))
  assert batch_norms == (1 if overrides.get('head') == 'thesis' else 0)
