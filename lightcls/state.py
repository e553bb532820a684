"""The training state and its creation, replicated over the device mesh."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lightcls import optim


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key; the step's randomness is fold_in(rng, step), so resumed runs redraw it
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def apply_gradients(self, grads: Any, batch_stats: Any, learning_rate: jax.Array) -> 'TrainState':
    opt_state = optim.with_learning_rate(self.opt_state, learning_rate)
    updates, opt_state = self.tx.update(grads, opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       seed: int, sharding: jax.sharding.Sharding) -> TrainState:
  """Initialises parameters, BatchNorm statistics and optimizer state from `seed`, placed by `sharding`."""

  def init() -> TrainState:
    params_rng, dropout_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      rng=step_rng, apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=sharding)()


def parameter_count(state: TrainState) -> int:
  """Trainable parameters (BatchNorm scale/bias included, running statistics excluded)."""
  return sum(x.size for x in jax.tree.leaves(state.params))
