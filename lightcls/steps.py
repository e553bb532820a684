"""Pure train and eval steps; train.py jit-compiles them over the device mesh."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from lightcls.data.augment import mixed_targets, training_batch
from lightcls.losses import LossFn
from lightcls.metrics import EvalMetrics, TrainMetrics
from lightcls.state import TrainState


def normalized(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 pixels, or float pixels in [0, 1] (augmented), -> float32 standardised per channel (mean/std given
  in [0, 1] units)."""
  x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], learning_rate: float, *, loss_fn: LossFn,
               mean: Sequence[float], std: Sequence[float], augment_config: ml_collections.ConfigDict,
               frozen: tuple[str, ...] = ()) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step on a global batch; BatchNorm statistics span the whole (sharded) batch.

  Top-level blocks named in `frozen` keep their parameters (their gradients are never computed: XLA
  drops the unused backward pass) and, through the model's LayerConfig, their BatchNorm statistics.
  With MixUp/CutMix the loss sees soft targets; train top-1 is still against each image's own label.
  """
  augment_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
  pixels, own_weight = training_batch(augment_rng, batch['image'], augment_config, mean, std)
  images = normalized(pixels, mean, std)
  labels = batch['label']

  def loss_and_outputs(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats}, images,
                                     train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    targets = mixed_targets(labels, own_weight, logits.shape[-1])
    return loss_fn(logits, targets).mean(), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_and_outputs, has_aux=True)(state.params)
  grads = {name: jax.tree.map(jnp.zeros_like, g) if name in frozen else g for name, g in grads.items()}
  learning_rate = jnp.asarray(learning_rate, jnp.float32)
  old_params = state.params
  state = state.apply_gradients(grads, batch_stats, learning_rate)
  if frozen:  # weight decay would still move them
    state = state.replace(params={name: old_params[name] if name in frozen else p
                                  for name, p in state.params.items()})
  metrics = TrainMetrics.single_from_model_output(loss=loss, logits=logits, labels=labels,
                                                  learning_rate=learning_rate)
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: LossFn, mean: Sequence[float],
              std: Sequence[float]) -> EvalMetrics:
  """Metrics of one padded eval batch; rows with mask=False do not count."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          normalized(batch['image'], mean, std), train=False)
  return EvalMetrics.single_from_model_output(loss=loss_fn(logits, batch['label']), logits=logits,
                                              labels=batch['label'], mask=batch['mask'])
