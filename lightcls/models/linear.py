"""Multinomial logistic regression on the pixels: a baseline, and a convex problem whose best learning rate a
brute-force search can find (the learning-rate search is tested against it)."""
from __future__ import annotations

import flax.linen as nn
import jax

from lightcls.models.layers import Classifier, LayerConfig


class Linear(nn.Module):
  num_classes: int
  dropout: float = 0.0
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    features = x.reshape(x.shape[0], -1).astype(self.layer.compute_dtype)
    logits = Classifier(self.num_classes, self.dropout, self.layer, self.classifier, name='classifier')(
        features, train)
    return (logits, features) if return_features else logits
