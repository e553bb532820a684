"""GhostNet (Han et al., 2020, "GhostNet: More Features from Cheap Operations"), as timm's `ghostnet_*`.

A Ghost module makes half of its output channels with an ordinary 1x1 convolution and the other half
from those with a cheap depthwise convolution. The block table below is the paper's Table 1.

`head='thesis'` is the variant of seed 000 (pchaberski/cars, after the original Huawei code): the head is
a bias-free linear layer 960 -> head_features, BatchNorm, ReLU, and the squeeze-excite width is c // 4
without rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lightcls.models.layers import (Classifier, Conv, ConvBNAct, LayerConfig, SqueezeExcite, batch_norm,
                                   make_divisible, pool_flat)


class Block(NamedTuple):
  kernel: int      # depthwise kernel of the stride-2 conv and of the shortcut
  expansion: int   # hidden channels (before width scaling)
  out: int         # output channels (before width scaling)
  se: bool
  stride: int


# Stages of GhostNet 1.0 (paper Table 1); width scales `expansion` and `out`.
GHOSTNET_BLOCKS: tuple[tuple[Block, ...], ...] = (
    (Block(3, 16, 16, False, 1),),
    (Block(3, 48, 24, False, 2),),
    (Block(3, 72, 24, False, 1),),
    (Block(5, 72, 40, True, 2),),
    (Block(5, 120, 40, True, 1),),
    (Block(3, 240, 80, False, 2),),
    (Block(3, 200, 80, False, 1), Block(3, 184, 80, False, 1), Block(3, 184, 80, False, 1),
     Block(3, 480, 112, True, 1), Block(3, 672, 112, True, 1)),
    (Block(5, 672, 160, True, 2),),
    (Block(5, 960, 160, False, 1), Block(5, 960, 160, True, 1), Block(5, 960, 160, False, 1),
     Block(5, 960, 160, True, 1)),
)
LAST_EXPANSION = 960
FIRST_STRIDED_BLOCK = 1
HEADS = ('timm', 'thesis')


class GhostModule(nn.Module):
  """1x1 conv to ceil(out/2) channels, then a 3x3 depthwise conv makes the other half."""
  features: int
  act: bool = True
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    act = 'relu' if self.act else None
    primary = ConvBNAct(math.ceil(self.features / 2), 1, act=act, layer=self.layer, name='primary')(x, train)
    cheap = ConvBNAct(None, 3, act=act, layer=self.layer, name='cheap')(primary, train)
    return jnp.concatenate([primary, cheap], axis=-1)[..., :self.features]


class GhostBottleneck(nn.Module):
  """Ghost module (expand) -> [stride-2 depthwise] -> [SE] -> Ghost module (project) + shortcut."""
  hidden: int
  features: int
  kernel: int = 3
  stride: int = 1
  se: bool = False
  se_rounding: bool = True  # False: the thesis' c // 4
  strided: bool = True      # False: a stride-2 block keeps its layers but runs them at stride 1
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = GhostModule(self.hidden, act=True, layer=self.layer, name='ghost1')(x, train)
    if self.stride > 1:
      y = ConvBNAct(None, self.kernel, self.run_stride, act=None, layer=self.layer, name='dw')(y, train)
    if self.se:
      reduced = make_divisible(self.hidden * 0.25, 4) if self.se_rounding else self.hidden // 4
      y = SqueezeExcite(reduced, layer=self.layer, name='se')(y)
    y = GhostModule(self.features, act=False, layer=self.layer, name='ghost2')(y, train)
    return y + self.shortcut(x, train)

  @property
  def run_stride(self) -> int:
    return self.stride if self.strided else 1

  def shortcut(self, x: jax.Array, train: bool) -> jax.Array:
    if x.shape[-1] == self.features and self.stride == 1:
      return x
    x = ConvBNAct(None, self.kernel, self.run_stride, act=None, layer=self.layer, name='shortcut_dw')(x, train)
    return ConvBNAct(self.features, 1, act=None, layer=self.layer, name='shortcut_pw')(x, train)


class GhostNet(nn.Module):
  """GhostNet classifier; `width` 0.5 / 1.0 / 1.3 gives timm's ghostnet_050 / _100 / _130.

  small_input: for 28-32 px images the stem and the first stride-2 block run at stride 1 (total stride 8
  instead of 32) with the same weights, so ImageNet weights still load.
  """
  num_classes: int
  width: float = 1.0
  dropout: float = 0.2
  head_features: int = 1280
  head: str = 'timm'
  small_input: bool = False
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'  # linear | cosine (layers.Classifier)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    stem_stride = 1 if self.small_input else 2
    x = ConvBNAct(make_divisible(16 * self.width, 4), 3, stem_stride, layer=self.layer, name='stem')(x, train)
    index = 0
    for stage in GHOSTNET_BLOCKS:
      for block in stage:
        strided = not (self.small_input and index == FIRST_STRIDED_BLOCK)
        x = GhostBottleneck(make_divisible(block.expansion * self.width, 4),
                            make_divisible(block.out * self.width, 4), block.kernel, block.stride,
                            block.se, self.head == 'timm', strided, self.layer, name=f'block{index}')(x, train)
        index += 1
    x = ConvBNAct(make_divisible(LAST_EXPANSION * self.width, 4), 1, layer=self.layer, name='last')(x, train)
    features = self.head_layers(pool_flat(x), train)
    logits = Classifier(self.num_classes, self.dropout, self.layer, self.classifier,
                        name='classifier')(features, train)
    return (logits, features) if return_features else logits

  def head_layers(self, x: jax.Array, train: bool) -> jax.Array:
    if self.head == 'timm':  # 1x1 conv with bias (a dense layer on the pooled features), ReLU
      return nn.relu(Conv(self.head_features, use_bias=True, layer=self.layer, name='head')(x[:, None, None])
                     ).reshape(x.shape[0], -1)
    if self.head == 'thesis':  # bias-free dense layer, BatchNorm, ReLU
      x = nn.Dense(self.head_features, use_bias=False, dtype=self.layer.compute_dtype, param_dtype=jnp.float32,
                   name='head')(x)
      return batch_norm(self.layer, train, act='relu', name='head_bn')(x)
    raise ValueError(f'unknown GhostNet head {self.head!r}; choose one of {HEADS}')
