"""The train step's SAM update, weight average and mutual-learning objective against their formulas,
computed by hand on a small convolution + BatchNorm network; its two XLA:CPU code generations against
each other."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from lightcls import losses, models, optim, state as state_lib, steps


class TinyNet(nn.Module):
  """conv -> BatchNorm -> ReLU -> mean pool -> dense: batch statistics that depend on the weights."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(jnp.mean(nn.relu(x), axis=(1, 2)))


def step_config(**optimizer):
  config = default.get_config()
  config.optimizer.update(name='sgd', lr=0.1, momentum=0.0, weight_decay=0.0, **optimizer)
  config.data.mean, config.data.std = (0.0,), (1.0,)
  return config


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(0)
  return {'image': jnp.asarray(rng.integers(0, 256, (6, 8, 8, 1)), jnp.uint8),
          'label': jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)}


def initial_state(config):
  return state_lib.create_train_state(TinyNet(), optim.create_optimizer(config.optimizer), (8, 8, 1), 0,
                                      jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                                      ema=config.optimizer.ema_decay > 0)


def hand_loss(state, images, labels):
  """The batch loss at given weights and the BatchNorm statistics that forward pass produces."""
  def loss(params):
    logits, updates = TinyNet().apply({'params': params, 'batch_stats': state.batch_stats}, images, train=True,
                                      mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates['batch_stats']
  return loss


@pytest.mark.parametrize('adaptive', [False, True])
def test_sam_step_equals_the_two_pass_formula_with_first_pass_batch_statistics(batch, adaptive):
  config = step_config(sam_rho=0.05, sam_adaptive=adaptive)
  state = initial_state(config)
  images = batch['image'].astype(jnp.float32) / 255.0
  loss = hand_loss(state, images, batch['label'])
  w = state.params
  g1, first_stats = jax.grad(loss, has_aux=True)(w)
  leaves_w, leaves_g = jax.tree.leaves(w), jax.tree.leaves(g1)
  if adaptive:  # ASAM: e = rho w^2 g / ||w g||
    norm = np.sqrt(sum(np.sum((np.abs(a) * b) ** 2) for a, b in zip(leaves_w, leaves_g)))
    ascent = jax.tree.map(lambda a, b: 0.05 * a * a * b / norm, w, g1)
  else:  # SAM: e = rho g / ||g||
    norm = np.sqrt(sum(np.sum(b ** 2) for b in leaves_g))
    ascent = jax.tree.map(lambda b: 0.05 * b / norm, g1)
  g2, _ = jax.grad(loss, has_aux=True)(jax.tree.map(jnp.add, w, ascent))
  expected = jax.tree.map(lambda a, b: a - 0.1 * b, w, g2)

  new_state, _ = jax.jit(steps.configured_train_step(config, 3))(state, batch, 0.1)
  for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for got, want in zip(jax.tree.leaves(new_state.batch_stats), jax.tree.leaves(first_stats)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  # And SAM's update is not plain SGD's: the second gradient was used.
  plain = jax.tree.map(lambda a, b: a - 0.1 * b, w, g1)
  assert not np.allclose(jax.tree.leaves(new_state.params)[0], jax.tree.leaves(plain)[0], atol=1e-7)


def test_logged_gradient_norm_is_the_global_l2_norm_of_the_gradient(batch):
  config = step_config()
  state = initial_state(config)
  images = batch['image'].astype(jnp.float32) / 255.0
  grads, _ = jax.grad(hand_loss(state, images, batch['label']), has_aux=True)(state.params)
  want = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads)))
  _, metrics = jax.jit(steps.configured_train_step(config, 3))(state, batch, 0.1)
  np.testing.assert_allclose(metrics.compute()['grad_norm'], want, rtol=1e-5)


def test_weight_average_follows_each_step_with_its_decay_warmup(batch):
  config = step_config(ema_decay=0.9)
  state = initial_state(config)
  step = jax.jit(steps.configured_train_step(config, 3))
  average = state.variables
  for t in range(1, 4):  # decays min(0.9, (1 + t) / (10 + t)): 2/11, 3/12, 4/13
    state, _ = step(state, batch, 0.1)
    decay = min(0.9, (1 + t) / (10 + t))
    average = jax.tree.map(lambda a, c: decay * a + (1 - decay) * c, average, state.variables)
  for got, want in zip(jax.tree.leaves(state.ema), jax.tree.leaves(average)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_mutual_objective_is_both_losses_plus_both_mutual_terms():
  config = default.get_config()
  config.mutual.enabled, config.mutual.loss = True, 'am_softmax'
  config.loss.label_smoothing = 0.1
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
  cosines = np.tanh(rng.normal(size=(5, 4))).astype(np.float32)
  targets = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
  loss, metric_logits = steps.objective(config, 4)((jnp.asarray(logits), jnp.asarray(cosines)), targets)

  def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  s = max(np.sqrt(2) * np.log(3), 3.0)
  smoothed = 0.9 * targets + 0.1 / 4
  ce = -(smoothed * log_softmax(logits)).sum(-1).mean()
  am = -(smoothed * log_softmax(s * (cosines - 0.35 * targets))).sum(-1).mean()
  p = (np.exp(log_softmax(logits)) + np.exp(log_softmax(s * cosines))) / 2
  mutual = (-(p * log_softmax(logits)).sum(-1).mean() - (p * log_softmax(s * cosines)).sum(-1).mean()) / 2
  assert float(loss) == pytest.approx((ce + am) / 2 + mutual, rel=1e-5)
  np.testing.assert_array_equal(metric_logits, logits)
  assert steps.logit_scales(config, 4) == (1.0, pytest.approx(s))
  assert losses.am_softmax_scale(4) == pytest.approx(s)


def test_a_train_step_compiled_for_fast_compile_updates_the_weights_as_for_fast_steps():
  config = step_config()
  config.model.update(name='mobilenet_v1', width=0.25, conv_impl='fast', small_input=True)
  model = models.create_model(config.model, 3)
  state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer), (32, 32, 1), 0,
                                       jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  rng = np.random.default_rng(1)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (8, 32, 32, 1)), jnp.uint8),
           'label': jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)}
  updated = {}
  for codegen in models.CPU_CODEGENS:
    step = jax.jit(steps.configured_train_step(config, 3), compiler_options=models.compiler_options(codegen))
    updated[codegen], _ = step(state, batch, 0.1)
  fast_steps, fast_compile = updated['fast_steps'], updated['fast_compile']
  for got, want in zip(jax.tree.leaves(fast_compile.variables), jax.tree.leaves(fast_steps.variables)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The step did move the weights: the comparison is of two updates, not of the initial weights.
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(fast_steps.params),
                                                    jax.tree.leaves(state.params)))
