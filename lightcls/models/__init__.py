"""Model registry: config.model.name -> constructor. Every model takes the same common options."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import ml_collections

from lightcls.models.ghostnet import GhostNet
from lightcls.models.layers import PADDINGS, LayerConfig


def layer_config(config: ml_collections.ConfigDict) -> LayerConfig:
  return LayerConfig(bn_momentum=config.bn_momentum, bn_eps=config.bn_eps, padding=config.padding,
                     dtype=config.dtype)


def _ghostnet(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  return GhostNet(num_classes=num_classes, width=config.width, dropout=config.dropout,
                  head_features=config.head_features or 1280, layer=layer_config(config))


MODELS: dict[str, Callable[[ml_collections.ConfigDict, int], nn.Module]] = {
    'ghostnet': _ghostnet,
}


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model named by `config.name` (a `config.model` section) for `num_classes` classes."""
  if config.name not in MODELS:
    raise ValueError(f'unknown model {config.name!r}; choose one of {sorted(MODELS)}')
  return MODELS[config.name](config, num_classes)


__all__ = ['MODELS', 'PADDINGS', 'create_model', 'layer_config']
