"""Classification losses, per example (the caller averages or masks)."""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy against one-hot labels smoothed as PyTorch's CrossEntropyLoss(label_smoothing)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype('float32'), targets)


LOSSES = ('cross_entropy',)


def create_loss(config: ml_collections.ConfigDict) -> LossFn:
  """The per-example loss named by a `config.loss` section."""
  if config.name == 'cross_entropy':
    smoothing = config.label_smoothing
    return lambda logits, labels: cross_entropy(logits, labels, smoothing)
  raise ValueError(f'unknown loss {config.name!r}; choose one of {LOSSES}')
