"""Optimizer factory, each optimizer equal to its torch.optim namesake, plus what the seed recipes add:
parameter groups without weight decay (no bias decay), a learning-rate factor for biases, gradient clipping,
SAM's ascent step and an exponential moving average of the weights.

The learning rate is an injected hyperparameter so the host sets it every step without recompiling.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'rmsprop')
TRAINABLE = ('all', 'classifier', 'last_blocks')


def _leaf_names(params: Any) -> Any:
  """The params tree with each leaf replaced by (its name, the names of its siblings)."""
  def names(node):
    return {k: names(v) if isinstance(v, dict) else (k, frozenset(node)) for k, v in node.items()}
  return names(dict(params))


def decay_mask(params: Any, no_bias_decay: bool) -> Any:
  """True for the leaves weight decay applies to: all of them, or with `no_bias_decay` only the kernels of
  convolutions and dense layers (biases and BatchNorm scale/bias excluded)."""
  return jax.tree.map(lambda leaf: not no_bias_decay or leaf[0] == 'kernel', _leaf_names(params),
                      is_leaf=lambda x: isinstance(x, tuple))


def layer_bias_mask(params: Any) -> Any:
  """True for the biases of convolutions and dense layers (a `bias` beside a `kernel`; BatchNorm's `bias`
  sits beside a `scale` and is not one)."""
  return jax.tree.map(lambda leaf: leaf[0] == 'bias' and 'kernel' in leaf[1], _leaf_names(params),
                      is_leaf=lambda x: isinstance(x, tuple))


def _direction(config: ml_collections.ConfigDict, weight_decay: float, mask) -> list[optax.GradientTransformation]:
  """The transformations before the learning rate, in torch.optim's order: coupled L2 decay is added to
  the gradient first (sgd, adam, rmsprop); AdamW's decoupled decay is added to the Adam direction.

  The transformations with state (momentum, moments) run on all parameters as one vector (`optax.flatten`):
  their state is one array per kind, and XLA compiles their update as a few kernels instead of three per
  parameter array (GhostNet: 816 of its train step's 2,543 kernels; experiments/RESULTS.md)."""
  coupled = [optax.add_decayed_weights(weight_decay, mask)]
  if config.name == 'sgd':
    # torch SGD: buf = m * buf + g, then p -= lr * buf (nesterov: g + m * buf); trace is the same recursion.
    momentum = [optax.flatten(optax.trace(config.momentum, config.nesterov))] if config.momentum else []
    return coupled + momentum
  if config.name == 'adam':
    return coupled + [optax.flatten(optax.scale_by_adam(config.b1, config.b2, config.eps))]
  if config.name == 'adamw':
    return [optax.flatten(optax.scale_by_adam(config.b1, config.b2, config.eps)),
            optax.add_decayed_weights(weight_decay, mask)]
  if config.name == 'rmsprop':
    # torch RMSprop adds eps outside the square root and applies momentum to g / (sqrt(v) + eps).
    scale = optax.scale_by_stddev if config.centered else optax.scale_by_rms
    momentum = [optax.trace(config.momentum)] if config.momentum else []
    return coupled + [optax.flatten(optax.chain(scale(config.rmsprop_decay, config.eps, eps_in_sqrt=False),
                                                *momentum))]
  raise ValueError(f'optimizer.name={config.name!r} is not one of {OPTIMIZERS}')


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer a `config.optimizer` section describes (SAM's ascent is in the train step)."""

  def optimizer(learning_rate, weight_decay):
    clip = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    mask = lambda params: decay_mask(params, config.no_bias_decay)
    # The learning rate is applied last, so a factor on the biases' updates is exactly a factor on their rate.
    bias_lr = ([optax.masked(optax.scale(config.bias_lr_factor), layer_bias_mask)]
               if config.bias_lr_factor != 1.0 else [])
    return optax.chain(*clip, *_direction(config, weight_decay, mask), optax.scale_by_learning_rate(learning_rate),
                       *bias_lr)

  # The rate is set before every step (with_learning_rate), from the host's schedule.
  return optax.inject_hyperparams(optimizer)(learning_rate=0.0, weight_decay=config.weight_decay)


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `optimizer.` key whose value cannot work."""
  if config.name not in OPTIMIZERS:
    raise ValueError(f'optimizer.name={config.name!r} is not one of {OPTIMIZERS}')
  checks = {
      'weight_decay': config.weight_decay >= 0, 'momentum': 0 <= config.momentum < 1,
      'b1': 0 <= config.b1 < 1, 'b2': 0 <= config.b2 < 1, 'eps': config.eps >= 0,
      'rmsprop_decay': 0 < config.rmsprop_decay < 1, 'bias_lr_factor': config.bias_lr_factor > 0,
      'clip_norm': config.clip_norm is None or config.clip_norm > 0, 'sam_rho': config.sam_rho >= 0,
      'ema_decay': 0 <= config.ema_decay < 1,
  }
  for key, ok in checks.items():
    if not ok:
      raise ValueError(f'optimizer.{key}={config[key]!r} is out of range (see configs/default.py)')
  if config.nesterov and not (config.name == 'sgd' and config.momentum):
    raise ValueError('optimizer.nesterov=True needs optimizer.name=\'sgd\' with optimizer.momentum > 0')
  if config.sam_adaptive and not config.sam_rho:
    raise ValueError('optimizer.sam_adaptive=True needs optimizer.sam_rho > 0 (ASAM is a form of SAM)')


def sam_perturbation(params: Any, grads: Any, rho: float, adaptive: bool) -> Any:
  """SAM's ascent e(w) = rho g / ||g|| (ASAM: rho w^2 g / ||w g||), with the global L2 norm over all leaves
  and 1e-12 added to it, as the reference implementation (google-research/sam) does."""
  scaled = jax.tree.map(lambda w, g: jnp.abs(w) * g, params, grads) if adaptive else grads
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(scaled)))
  scale = rho / (norm + 1e-12)
  weight = (lambda w: w * w) if adaptive else (lambda w: 1.0)
  return jax.tree.map(lambda w, g: weight(w) * g * scale, params, grads)


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
  """The average's decay after `step` updates: min(decay, (1 + step) / (10 + step)), TensorFlow's
  ExponentialMovingAverage(num_updates) warmup. Without it the average of a short run keeps the first steps'
  weights and BatchNorm statistics (variances can be orders of magnitude off early on), which measured
  10% top-1 after 3 epochs of Fashion-MNIST with decay 0.998 where the weights themselves had 90%."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(average: Any, current: Any, decay: jax.Array) -> Any:
  """decay * average + (1 - decay) * current, leaf by leaf (timm's ModelEmaV2: weights and buffers)."""
  return jax.tree.map(lambda a, c: decay * a + (1.0 - decay) * c, average, current)


def frozen_blocks(blocks: list[str], config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The top-level blocks (in forward order) that a `config.freeze` section keeps fixed."""
  if config.trainable == 'all':
    return ()
  if config.trainable == 'classifier':
    return tuple(blocks[:-1])
  if config.trainable == 'last_blocks':
    if not 1 <= config.last_blocks <= len(blocks):
      raise ValueError(f'freeze.last_blocks={config.last_blocks} must be between 1 and the model\'s '
                       f'{len(blocks)} top-level blocks ({", ".join(blocks)})')
    return tuple(blocks[:-config.last_blocks])
  raise ValueError(f'unknown freeze.trainable {config.trainable!r}; choose one of {TRAINABLE}')


def with_learning_rate(opt_state: optax.InjectHyperparamsState, learning_rate: jax.Array):
  """The optimizer state with its learning rate replaced (float32, so the step never recompiles)."""
  hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(learning_rate, jnp.float32))
  return opt_state._replace(hyperparams=hyperparams)
