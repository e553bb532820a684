"""EfficientNet B0-B7 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks"), as Keras' `EfficientNetB*` and timm's `efficientnet_b*` / `tf_efficientnet_b*`.

B0 is a stack of MBConv blocks (the stage table below, the paper's Table 1); B1-B7 scale it by compound
coefficients: `width` multiplies every channel count (rounded to a multiple of 8), `depth` every stage's
block count (rounded up), and each variant has its own training resolution and classifier dropout.

Layers are created in the order of the forward pass, as timm registers its modules and Keras builds its
layers, so weights port by position (`convert.py`). Flavours: timm's `efficientnet_b*` use the default
LayerConfig (symmetric padding, BatchNorm eps 1e-5); Keras and timm's `tf_efficientnet_b*` need
`LayerConfig(padding='same', bn_eps=1e-3)`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax

from lightcls.models.layers import (Classifier, ConvBNAct, DropPath, LayerConfig, SqueezeExcite, make_divisible,
                                   pool_flat)


class Stage(NamedTuple):
  kernel: int      # depthwise kernel
  expansion: int   # hidden channels = input channels * expansion (1: no expansion convolution)
  out: int         # output channels of B0 (before width scaling)
  repeats: int     # blocks in the stage in B0 (before depth scaling)
  stride: int      # stride of the stage's first block


# EfficientNet-B0 (paper Table 1), after the 3x3 stride-2 stem of 32 channels.
B0_STAGES: tuple[Stage, ...] = (
    Stage(3, 1, 16, 1, 1),
    Stage(3, 6, 24, 2, 2),
    Stage(5, 6, 40, 2, 2),
    Stage(3, 6, 80, 3, 2),
    Stage(5, 6, 112, 3, 1),
    Stage(5, 6, 192, 4, 2),
    Stage(3, 6, 320, 1, 1),
)
STEM_FEATURES = 32
HEAD_FEATURES = 1280
SE_RATIO = 0.25        # of the block's input channels
FIRST_STRIDED_STAGE = 1  # with small_input, this stage's stride-2 block runs at stride 1


class Scaling(NamedTuple):
  width: float
  depth: float
  resolution: int
  dropout: float


# The paper's compound coefficients (as Keras and timm use them).
VARIANTS: dict[str, Scaling] = {
    'b0': Scaling(1.0, 1.0, 224, 0.2),
    'b1': Scaling(1.0, 1.1, 240, 0.2),
    'b2': Scaling(1.1, 1.2, 260, 0.3),
    'b3': Scaling(1.2, 1.4, 300, 0.3),
    'b4': Scaling(1.4, 1.8, 380, 0.4),
    'b5': Scaling(1.6, 2.2, 456, 0.4),
    'b6': Scaling(1.8, 2.6, 528, 0.5),
    'b7': Scaling(2.0, 3.1, 600, 0.5),
}


class MBConv(nn.Module):
  """[1x1 expand conv-BN-swish] -> kxk depthwise conv-BN-swish -> SE -> 1x1 project conv-BN (+ shortcut).

  The expansion convolution is left out when `expansion` is 1 (timm's DepthwiseSeparableConv). The
  shortcut, with stochastic depth on the branch, exists when the block keeps resolution and width.
  """
  features: int
  expansion: int = 6
  kernel: int = 3
  stride: int = 1
  drop_path: float = 0.0
  strided: bool = True  # False: a stride-2 block keeps its layers but runs them at stride 1
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    in_features = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = ConvBNAct(in_features * self.expansion, 1, act='swish', layer=self.layer, name='expand')(y, train)
    stride = self.stride if self.strided else 1
    y = ConvBNAct(None, self.kernel, stride, act='swish', layer=self.layer, name='dw')(y, train)
    y = SqueezeExcite(max(1, int(in_features * SE_RATIO)), act='swish', gate='sigmoid', layer=self.layer,
                      name='se')(y)
    y = ConvBNAct(self.features, 1, act=None, layer=self.layer, name='project')(y, train)
    if self.stride == 1 and in_features == self.features:
      y = DropPath(self.drop_path, name='drop_path')(y, train) + x
    return y


def stage_repeats(depth: float) -> tuple[int, ...]:
  """Blocks per stage at depth coefficient `depth` (B0's counts scaled, rounded up)."""
  return tuple(int(math.ceil(stage.repeats * depth)) for stage in B0_STAGES)


class EfficientNet(nn.Module):
  """EfficientNet-`variant` classifier.

  width: an extra multiplier on the variant's own width coefficient. dropout / head_features: None gives
  the variant's own (its dropout; 1280 channels scaled by the width). drop_path: stochastic depth of the
  last block; block i of n drops its residual branch with probability drop_path * i / n.
  small_input: for 28-32 px images the stem and the first stride-2 stage run at stride 1 (total stride 8
  instead of 32) with the same weights, so ImageNet weights still load.
  """
  num_classes: int
  variant: str = 'b0'
  width: float = 1.0
  dropout: float | None = None
  drop_path: float = 0.2
  head_features: int | None = None
  small_input: bool = False
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'  # linear | cosine (layers.Classifier)

  @property
  def scaling(self) -> Scaling:
    if self.variant not in VARIANTS:
      raise ValueError(f'unknown EfficientNet variant {self.variant!r}; choose one of {sorted(VARIANTS)}')
    return VARIANTS[self.variant]

  def channels(self, features: int) -> int:
    return make_divisible(features * self.scaling.width * self.width, 8)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    scaling = self.scaling
    stem_stride = 1 if self.small_input else 2
    x = ConvBNAct(self.channels(STEM_FEATURES), 3, stem_stride, act='swish', layer=self.layer,
                  name='stem')(x, train)
    repeats = stage_repeats(scaling.depth)
    total, index = sum(repeats), 0
    for stage_index, (stage, count) in enumerate(zip(B0_STAGES, repeats)):
      for j in range(count):
        stride = stage.stride if j == 0 else 1
        strided = not (self.small_input and stage_index == FIRST_STRIDED_STAGE)
        x = MBConv(self.channels(stage.out), stage.expansion, stage.kernel, stride,
                   self.drop_path * index / total, strided, self.layer, name=f'block{index}')(x, train)
        index += 1
    head_features = self.channels(HEAD_FEATURES) if self.head_features is None else self.head_features
    x = ConvBNAct(head_features, 1, act='swish', layer=self.layer, name='head')(x, train)
    features = pool_flat(x)
    dropout = scaling.dropout if self.dropout is None else self.dropout
    logits = Classifier(self.num_classes, dropout, self.layer, self.classifier,
                        name='classifier')(features, train)
    return (logits, features) if return_features else logits
