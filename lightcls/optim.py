"""Optimizer factory. The learning rate is an injected hyperparameter so the host can set it every step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def _adamw(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.inject_hyperparams(optax.adamw)(
      learning_rate=config.lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)


def _sgd(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  # Coupled L2 weight decay added to the gradient before momentum, as torch.optim.SGD does.
  def sgd(learning_rate, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=config.momentum or None, nesterov=config.nesterov))
  return optax.inject_hyperparams(sgd)(learning_rate=config.lr, weight_decay=config.weight_decay)


OPTIMIZERS = {'adamw': _adamw, 'sgd': _sgd}


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer named by a `config.optimizer` section."""
  if config.name not in OPTIMIZERS:
    raise ValueError(f'unknown optimizer {config.name!r}; choose one of {sorted(OPTIMIZERS)}')
  return OPTIMIZERS[config.name](config)


TRAINABLE = ('all', 'classifier', 'last_blocks')


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
