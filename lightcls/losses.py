"""Classification losses, per example (the caller averages or masks)."""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]  # (logits, integer labels or (N, C) targets) -> (N,)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy as PyTorch's CrossEntropyLoss(label_smoothing), against integer labels (N,) or
  class probabilities (N, C) such as MixUp/CutMix targets (smoothed the same way: (1 - eps) t + eps / C)."""
  targets = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits.astype('float32'), optax.smooth_labels(targets, label_smoothing))


LOSSES = ('cross_entropy',)


def create_loss(config: ml_collections.ConfigDict) -> LossFn:
  """The per-example loss named by a `config.loss` section."""
  if config.name == 'cross_entropy':
    smoothing = config.label_smoothing
    return lambda logits, labels: cross_entropy(logits, labels, smoothing)
  raise ValueError(f'unknown loss {config.name!r}; choose one of {LOSSES}')
