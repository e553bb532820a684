"""The training state and its creation, replicated over the device mesh."""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lightcls import models, optim


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key; the step's randomness is fold_in(rng, step), so resumed runs redraw it
  ema: Any  # None, or the moving average of `variables` (optimizer.ema_decay > 0)
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def with_ema_variables(self) -> 'TrainState':
    """This state with the moving average in place of the weights (to evaluate them)."""
    return self.replace(params=self.ema['params'], batch_stats=self.ema['batch_stats'])

  def apply_gradients(self, grads: Any, batch_stats: Any, learning_rate: jax.Array) -> 'TrainState':
    opt_state = optim.with_learning_rate(self.opt_state, learning_rate)
    updates, opt_state = self.tx.update(grads, opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       seed: int, sharding: jax.sharding.Sharding, ema: bool = False) -> TrainState:
  """Initialises parameters, BatchNorm statistics and optimizer state from `seed`, placed by `sharding`;
  with `ema`, a moving average of the variables starting from them."""

  def init() -> TrainState:
    params_rng, dropout_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    average = {'params': params, 'batch_stats': batch_stats} if ema else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=step_rng, ema=average, apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=sharding, compiler_options=models.INIT_COMPILER_OPTIONS)()


def parameter_count(state: TrainState) -> int:
  """Trainable parameters (BatchNorm scale/bias included, running statistics excluded)."""
  return sum(x.size for x in jax.tree.leaves(state.params))
