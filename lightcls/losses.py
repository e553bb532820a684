"""Classification losses, per example (the caller averages or masks), in float32.

Labels are integer classes (N,) or class probabilities (N, C) such as MixUp/CutMix targets. Besides
cross-entropy: AM-Softmax on the cosines of a cosine classifier, a confidence penalty on either, and the
mutual term of deep mutual learning (seed 002: two models, each also pulled towards their mean prediction).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]  # (logits, integer labels or (N, C) targets) -> (N,)

LOSSES = ('cross_entropy', 'am_softmax')


def one_hot_targets(labels: jax.Array, num_classes: int) -> jax.Array:
  """Class probabilities (N, C): integer labels one-hot, (N, C) targets unchanged."""
  return labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy as PyTorch's CrossEntropyLoss(label_smoothing), against integer labels (N,) or
  class probabilities (N, C) such as MixUp/CutMix targets (smoothed the same way: (1 - eps) t + eps / C)."""
  targets = one_hot_targets(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), optax.smooth_labels(targets, label_smoothing))


def am_softmax(cosines: jax.Array, labels: jax.Array, margin: float, scale: float,
               label_smoothing: float = 0.0) -> jax.Array:
  """AM-Softmax (Wang et al. 2018, "Additive Margin Softmax"): cross-entropy of s * (cos - m * target).

  The margin is subtracted in proportion to the target, so a MixUp/CutMix image owes each of its classes
  that class's share of the margin (linear in the target, as the cross-entropy is). Label smoothing, if
  any, smooths only the cross-entropy's targets: the margin stays on the labelled classes.
  """
  cosines = cosines.astype(jnp.float32)
  targets = one_hot_targets(labels, cosines.shape[-1])
  return cross_entropy(scale * (cosines - margin * targets), targets, label_smoothing)


def am_softmax_scale(num_classes: int) -> float:
  """Seed 002's automatic AM-Softmax scale max(sqrt(2) ln(C - 1), 3): it grows with C so the true class can
  still reach a high probability among many; 3 is the floor for few classes (C = 2 gives 3)."""
  return max(math.sqrt(2.0) * math.log(max(num_classes - 1, 1)), 3.0)  # max(.., 1): C = 1 is not log(0)


def entropy(logits: jax.Array) -> jax.Array:
  """Entropy of softmax(logits) per example, in nats."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def mutual_terms(logits: Sequence[jax.Array], scales: Sequence[float]) -> list[jax.Array]:
  """Deep mutual learning's terms M_i = -sum_c p log_softmax(s_i z_i), per example, for every model i.

  p = mean_j softmax(s_j z_j) is the models' consensus, a fixed target (stop_gradient): each model is pulled
  towards it without pulling it towards itself. s_j puts model j's outputs on a probability scale
  (`logit_scale`: 1 for linear logits, the AM-Softmax scale for cosines).
  """
  scaled = [scale * z.astype(jnp.float32) for z, scale in zip(logits, scales)]
  consensus = jax.lax.stop_gradient(jnp.mean(jnp.stack([jax.nn.softmax(z) for z in scaled]), axis=0))
  return [optax.softmax_cross_entropy(z, consensus) for z in scaled]


def logit_scale(config: ml_collections.ConfigDict, num_classes: int, name: str | None = None) -> float:
  """The factor that puts a model's outputs on a probability scale (softmax(factor * outputs)): 1 for
  cross-entropy's logits, the scale s for AM-Softmax's cosines. `config` is a `config.loss` section; `name`
  the loss (None: config.name)."""
  if (name or config.name) == 'am_softmax':
    return am_softmax_scale(num_classes) if config.scale is None else float(config.scale)
  return 1.0


def create_loss(config: ml_collections.ConfigDict, num_classes: int | None = None,
                name: str | None = None) -> LossFn:
  """The per-example loss of a `config.loss` section.

  name: the loss (None: config.name); the mutual-learning peer passes config.mutual.loss and shares the
  section's label smoothing, margin, scale and confidence penalty. num_classes: for the automatic
  AM-Softmax scale (None: the logits' class count, the same number). Label smoothing applies to both
  losses. The confidence penalty (Pereyra et al. 2017) subtracts beta times the entropy of the model's
  prediction, softmax(logit_scale * outputs): for AM-Softmax the prediction without the margin, as at test
  time.
  """
  name = name or config.name
  if name not in LOSSES:
    raise ValueError(f'unknown loss {name!r}; choose one of {LOSSES}')
  smoothing, margin, beta = config.label_smoothing, config.margin, config.confidence_penalty

  def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    scale = logit_scale(config, num_classes or logits.shape[-1], name)
    if name == 'am_softmax':
      value = am_softmax(logits, labels, margin, scale, smoothing)
    else:
      value = cross_entropy(logits, labels, smoothing)
    return value - beta * entropy(scale * logits) if beta else value

  return loss


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `loss.*` / `mutual.*` key (without 'config.') whose value cannot work."""
  loss = config.loss
  for key, name in (('loss.name', loss.name), ('mutual.loss', config.mutual.loss)):
    if name not in LOSSES:
      raise ValueError(f'{key}={name!r} is not one of {LOSSES}.')
  if loss.name == 'am_softmax' and config.model.classifier != 'cosine':
    raise ValueError(f"loss.name='am_softmax' needs cosine outputs, not model.classifier="
                     f"{config.model.classifier!r}: set config.model.classifier='cosine'.")
  if loss.name == 'cross_entropy' and config.model.classifier == 'cosine':
    raise ValueError("loss.name='cross_entropy' with model.classifier='cosine' trains on logits bounded to "
                     "[-1, 1] and barely learns: set config.loss.name='am_softmax' (which scales them).")
  if not 0.0 <= loss.margin < 1.0:
    raise ValueError(f'loss.margin={loss.margin} must be in [0, 1) (a cosine margin; seed 002: 0.35).')
  if loss.scale is not None and loss.scale <= 0:
    raise ValueError(f'loss.scale={loss.scale} must be positive, or None for max(sqrt(2) ln(C - 1), 3).')
  if loss.confidence_penalty < 0:
    raise ValueError(f'loss.confidence_penalty={loss.confidence_penalty} must be >= 0 (0: off); a negative '
                     'beta would reward confident predictions.')
  if not 0.0 <= loss.label_smoothing < 1.0:
    raise ValueError(f'loss.label_smoothing={loss.label_smoothing} must be in [0, 1) (0: off).')
