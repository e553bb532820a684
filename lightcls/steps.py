"""Pure train and eval steps; train.py jit-compiles them over the device mesh.

A step sees the model's outputs through an `Objective`: one model gives logits, a deep-mutual-learning pair
(models/mutual.py) gives a tuple of logits, one per member; the objective turns them into the scalar loss.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from lightcls import losses, optim
from lightcls.data.augment import mixed_targets, training_batch
from lightcls.metrics import TrainMetrics
from lightcls.state import TrainState

# (model outputs, targets (N, C)) -> (scalar loss, the logits train metrics are computed from)
Objective = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


def normalized(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 pixels, or float pixels in [0, 1] (augmented), -> float32 standardised per channel (mean/std given
  in [0, 1] units)."""
  x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def member_losses(config: ml_collections.ConfigDict, num_classes: int) -> tuple[losses.LossFn, ...]:
  """The per-example loss of each model trained: the model's, and with mutual learning its peer's."""
  own = losses.create_loss(config.loss, num_classes)
  if not config.mutual.enabled:
    return (own,)
  return own, losses.create_loss(config.loss, num_classes, name=config.mutual.loss)


def logit_scales(config: ml_collections.ConfigDict, num_classes: int) -> tuple[float, ...]:
  """Per model, the factor that puts its outputs on the logit scale (AM-Softmax's cosines times s)."""
  scales = (losses.logit_scale(config.loss, num_classes),)
  if config.mutual.enabled:
    scales += (losses.logit_scale(config.loss, num_classes, name=config.mutual.loss),)
  return scales


def objective(config: ml_collections.ConfigDict, num_classes: int) -> Objective:
  """The training objective: the mean loss of one model; of a mutual pair, seed 002's
  mean_i(loss_i) + mean_i(M_i), M_i the cross-entropy of member i against the members' mean distribution."""
  loss_fns = member_losses(config, num_classes)
  if len(loss_fns) == 1:
    return lambda logits, targets: (loss_fns[0](logits, targets).mean(), logits)
  scales = logit_scales(config, num_classes)

  def mutual(outputs, targets):
    own = jnp.mean(jnp.stack([fn(z, targets).mean() for fn, z in zip(loss_fns, outputs)]))
    peer = jnp.mean(jnp.stack([m.mean() for m in losses.mutual_terms(outputs, scales)]))
    return own + peer, outputs[0]
  return mutual


def without_frozen(grads: dict[str, Any], frozen: tuple[str, ...]) -> dict[str, Any]:
  return {name: jax.tree.map(jnp.zeros_like, g) if name in frozen else g for name, g in grads.items()}


def train_step(state: TrainState, batch: dict[str, jax.Array], learning_rate: float, *, objective: Objective,
               mean: Sequence[float], std: Sequence[float], augment_config: ml_collections.ConfigDict,
               frozen: tuple[str, ...] = (), sam_rho: float = 0.0, sam_adaptive: bool = False,
               ema_decay: float = 0.0) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step on a global batch; BatchNorm statistics span the whole (sharded) batch.

  Top-level blocks named in `frozen` keep their parameters (their gradients are never computed: XLA
  drops the unused backward pass) and, through the model's LayerConfig, their BatchNorm statistics.
  With MixUp/CutMix the loss sees soft targets; train top-1 is still against each image's own label.
  With SAM (sam_rho > 0) the update uses the gradient at w + e(w), computed on the same images with the
  same dropout masks; the loss, the metrics and the new BatchNorm statistics are those of the first pass.
  """
  augment_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
  pixels, own_weight = training_batch(augment_rng, batch['image'], augment_config, mean, std)
  images = normalized(pixels, mean, std)
  labels = batch['label']

  def loss_and_outputs(params):
    outputs, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, images,
                                      train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    num_classes = (outputs[0] if isinstance(outputs, tuple) else outputs).shape[-1]
    loss, logits = objective(outputs, mixed_targets(labels, own_weight, num_classes))
    return loss, (logits, updates['batch_stats'])

  gradient = jax.value_and_grad(loss_and_outputs, has_aux=True)
  (loss, (logits, batch_stats)), grads = gradient(state.params)
  grads = without_frozen(grads, frozen)
  if sam_rho:
    ascent = optim.sam_perturbation(state.params, grads, sam_rho, sam_adaptive)
    _, grads = gradient(jax.tree.map(jnp.add, state.params, ascent))
    grads = without_frozen(grads, frozen)
  learning_rate = jnp.asarray(learning_rate, jnp.float32)
  # One reduction over all gradients: a sum per array made XLA compile a kernel per array (GhostNet 1.0:
  # 4-6 s more compile and a slower step; experiments/RESULTS.md).
  grad_norm = jnp.sqrt(jnp.sum(jnp.square(jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grads)]))))
  old_params = state.params
  state = state.apply_gradients(grads, batch_stats, learning_rate)
  if frozen:  # weight decay would still move them
    state = state.replace(params={name: old_params[name] if name in frozen else p
                                  for name, p in state.params.items()})
  if ema_decay:  # state.step now counts this update
    state = state.replace(ema=optim.ema_update(state.ema, state.variables, optim.ema_decay(ema_decay, state.step)))
  # (state.step now counts this update: it is the step number the host logs)
  metrics = TrainMetrics.single_from_model_output(loss=loss, logits=logits, labels=labels,
                                                  learning_rate=learning_rate, grad_norm=grad_norm,
                                                  step=state.step)
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fns: Sequence[losses.LossFn],
              scales: Sequence[float], mean: Sequence[float], std: Sequence[float]) -> dict[str, jax.Array]:
  """Per model (one, or a mutual pair): logits on the logit scale (M, N, C) and per-example losses (M, N)
  of one padded eval batch, with its labels and mask; the host keeps the rows whose mask is True."""
  outputs = state.apply_fn(state.variables, normalized(batch['image'], mean, std), train=False)
  outputs = outputs if isinstance(outputs, tuple) else (outputs,)
  return {'logits': jnp.stack([s * z for s, z in zip(scales, outputs)]),
          'loss': jnp.stack([fn(z, batch['label']) for fn, z in zip(loss_fns, outputs)]),
          'label': batch['label'], 'mask': batch['mask']}


def configured_train_step(config: ml_collections.ConfigDict, num_classes: int,
                          frozen: tuple[str, ...] = ()) -> Callable[..., tuple[TrainState, TrainMetrics]]:
  """`train_step` with everything but (state, batch, learning_rate) taken from `config`."""
  return functools.partial(
      train_step, objective=objective(config, num_classes), mean=tuple(config.data.mean),
      std=tuple(config.data.std), augment_config=config.augment, frozen=frozen, sam_rho=config.optimizer.sam_rho,
      sam_adaptive=config.optimizer.sam_adaptive, ema_decay=config.optimizer.ema_decay)


def configured_eval_step(config: ml_collections.ConfigDict, num_classes: int) -> Callable[..., dict]:
  """`eval_step` with everything but (state, batch) taken from `config`."""
  return functools.partial(eval_step, loss_fns=member_losses(config, num_classes),
                           scales=logit_scales(config, num_classes), mean=tuple(config.data.mean),
                           std=tuple(config.data.std))
