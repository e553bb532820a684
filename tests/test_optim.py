"""Optimizers against torch.optim, step by step with a changing learning rate; the no-bias-decay and
bias-rate masks on real models; SAM's ascent and the weight average against their formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import default
from lightcls import models, optim

# A conv layer with bias, a BatchNorm and a dense layer: the leaf kinds every model has.
SHAPES = {'conv': {'kernel': (3, 3, 2, 4), 'bias': (4,)}, 'bn': {'scale': (4,), 'bias': (4,)},
          'fc': {'kernel': (4, 3), 'bias': (3,)}}
RATES = (0.1, 0.05, 0.2, 0.01, 0.1, 0.03)


def optimizer_config(**overrides):
  config = default.get_config().optimizer
  config.update(overrides)
  return config


def tree(rng, scale=1.0):
  return {layer: {name: jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)
                  for name, shape in leaves.items()} for layer, leaves in SHAPES.items()}


def torch_optimizer(config, params):
  """torch.optim with seed 002's parameter groups: kernels decayed; layer biases at bias_lr_factor x the
  rate without decay; BatchNorm scale and bias without decay (with no_bias_decay)."""
  decay = config.weight_decay
  groups = [
      {'params': [params['conv']['kernel'], params['fc']['kernel']], 'weight_decay': decay, 'factor': 1.0},
      {'params': [params['conv']['bias'], params['fc']['bias']],
       'weight_decay': 0.0 if config.no_bias_decay else decay, 'factor': config.bias_lr_factor},
      {'params': [params['bn']['scale'], params['bn']['bias']],
       'weight_decay': 0.0 if config.no_bias_decay else decay, 'factor': 1.0},
  ]
  common = dict(lr=config.lr)
  if config.name == 'sgd':
    return torch.optim.SGD(groups, momentum=config.momentum, nesterov=config.nesterov, **common)
  if config.name == 'adam':
    return torch.optim.Adam(groups, betas=(config.b1, config.b2), eps=config.eps, **common)
  if config.name == 'adamw':
    return torch.optim.AdamW(groups, betas=(config.b1, config.b2), eps=config.eps, **common)
  return torch.optim.RMSprop(groups, alpha=config.rmsprop_decay, eps=config.eps, momentum=config.momentum,
                             centered=config.centered, **common)


@pytest.mark.parametrize('overrides', [
    dict(name='sgd', momentum=0.9, weight_decay=5e-4, no_bias_decay=True, bias_lr_factor=2.0),
    dict(name='sgd', momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(name='sgd', momentum=0.0, weight_decay=1e-2, clip_norm=0.5),
    dict(name='adam', b1=0.8, b2=0.99, weight_decay=1e-2, no_bias_decay=True),
    dict(name='adamw', weight_decay=0.6, no_bias_decay=True, bias_lr_factor=2.0),
    dict(name='rmsprop', momentum=0.0, weight_decay=1e-3, eps=1e-3),
    dict(name='rmsprop', momentum=0.9, centered=True, rmsprop_decay=0.9, eps=1e-3, clip_norm=1.0),
], ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()))
def test_optimizer_follows_torch_step_by_step(overrides):
  config = optimizer_config(lr=RATES[0], **overrides)
  rng = np.random.default_rng(0)
  params = tree(rng)
  torch_params = {l: {n: torch.tensor(np.asarray(v), requires_grad=True) for n, v in leaves.items()}
                  for l, leaves in params.items()}
  reference = torch_optimizer(config, torch_params)
  tx = optim.create_optimizer(config)
  state = tx.init(params)
  for rate in RATES:
    grads = tree(rng, scale=3.0)
    for l, leaves in torch_params.items():
      for n, p in leaves.items():
        p.grad = torch.tensor(np.asarray(grads[l][n]))
    if config.clip_norm:
      torch.nn.utils.clip_grad_norm_([p for leaves in torch_params.values() for p in leaves.values()],
                                     config.clip_norm)
    for group in reference.param_groups:
      group['lr'] = rate * group['factor']
    reference.step()
    updates, state = tx.update(grads, optim.with_learning_rate(state, rate), params)
    params = jax.tree.map(jnp.add, params, updates)
  for l, leaves in torch_params.items():
    for n, p in leaves.items():
      np.testing.assert_allclose(np.asarray(params[l][n]), p.detach().numpy(), rtol=2e-5, atol=2e-6,
                                 err_msg=f'{l}/{n}')


@pytest.mark.parametrize('name', ['ghostnet', 'efficientnet_b0', 'mobilenet_v3_large'])
def test_no_bias_decay_touches_exactly_the_conv_and_dense_kernels(name):
  config = default.get_config().model
  config.name = name
  model = models.create_model(config, 10)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))['params']
  paths = {jax.tree_util.keystr(p): p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  decayed = jax.tree_util.tree_leaves(optim.decay_mask(params, no_bias_decay=True))
  biases = jax.tree_util.tree_leaves(optim.layer_bias_mask(params))
  names = [p[-1].key for p in paths.values()]
  parents = [jax.tree_util.keystr(p[:-1]) for p in paths.values()]
  kernel_parents = {parent for parent, n in zip(parents, names) if n == 'kernel'}
  assert decayed == [n == 'kernel' for n in names]
  assert biases == [n == 'bias' and parent in kernel_parents for n, parent in zip(names, parents)]
  assert sum(biases) > 0 and not any(b and n != 'bias' for b, n in zip(biases, names))
  # Every BatchNorm (a scale beside a bias) is neither decayed nor a layer bias.
  bn_parents = {parent for parent, n in zip(parents, names) if n == 'scale'}
  assert not any((d or b) for d, b, parent in zip(decayed, biases, parents) if parent in bn_parents)
  assert all(jax.tree_util.tree_leaves(optim.decay_mask(params, no_bias_decay=False)))


def test_sam_perturbation_equals_its_formula():
  rng = np.random.default_rng(1)
  params, grads = tree(rng), tree(rng)
  flat_w = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)]).astype(np.float64)
  flat_g = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)]).astype(np.float64)
  plain = optim.sam_perturbation(params, grads, 0.05, adaptive=False)
  np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in jax.tree.leaves(plain)]),
                             0.05 * flat_g / np.linalg.norm(flat_g), rtol=1e-5)
  adaptive = optim.sam_perturbation(params, grads, 0.5, adaptive=True)
  np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in jax.tree.leaves(adaptive)]),
                             0.5 * flat_w ** 2 * flat_g / np.linalg.norm(np.abs(flat_w) * flat_g), rtol=1e-5)


def test_ema_decay_warms_up_to_its_value():
  assert [float(optim.ema_decay(0.998, jnp.asarray(t))) for t in (0, 1, 90, 10**6)] == pytest.approx(
      [0.1, 2 / 11, 0.91, 0.998])


def test_ema_update_is_the_moving_average():
  rng = np.random.default_rng(2)
  average, current = tree(rng), tree(rng)
  result = optim.ema_update(average, current, 0.9)
  for a, c, r in zip(jax.tree.leaves(average), jax.tree.leaves(current), jax.tree.leaves(result)):
    np.testing.assert_allclose(r, 0.9 * np.asarray(a) + 0.1 * np.asarray(c), rtol=1e-6)


@pytest.mark.parametrize('overrides, key', [
    (dict(nesterov=True, name='adamw'), 'optimizer.nesterov'),
    (dict(sam_adaptive=True), 'optimizer.sam_adaptive'),
    (dict(ema_decay=1.0), 'optimizer.ema_decay'),
    (dict(clip_norm=0.0), 'optimizer.clip_norm'),
    (dict(name='lamb'), 'optimizer.name'),
])
def test_check_names_the_bad_optimizer_key(overrides, key):
  with pytest.raises(ValueError, match=key):
    optim.check(optimizer_config(**overrides))
