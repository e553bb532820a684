"""MobileNet V1 (Howard et al., 2017), V2 (Sandler et al., 2018) and V3 Small / Large (Howard et al., 2019).

All three are stacks of one block, the inverted residual: [1x1 expand conv-BN-act] -> k x k depthwise
conv-BN-act -> [squeeze-excite] -> 1x1 project conv-BN [-act] [+ shortcut]. V1's depthwise-separable
block is the case without expansion whose projection keeps its activation and has no shortcut; V2 adds
the expansion and the linear bottleneck with shortcut; V3 adds squeeze-excite, 5x5 kernels, hard-swish
and an "efficient" head (global pool, then a 1x1 conv with bias and hard-swish, no BatchNorm).

Channel counts follow timm and Keras: `make_divisible(channels * width, 8)` (Keras V1 truncates,
int(channels * width), the same at its widths 0.25-1.0); a block's hidden width is
`make_divisible(input channels * expansion, 8)` and V3's squeeze-excite width a quarter of it, rounded
the same way. Modules create their layers in forward order, as timm registers its modules and Keras
builds its layers, so `convert.port_from_torch` / `port_from_keras` pair them by position:

  lightcls                       timm                               Keras applications
  MobileNetV1(width=w)           mobilenetv1_100, _125              MobileNet(alpha=w)
  MobileNetV2(width=w)           mobilenetv2_035 ... _100, _140     MobileNetV2(alpha=w)
  MobileNetV3('large', width=w)  [tf_]mobilenetv3_large_075, _100   MobileNetV3Large(alpha=w)
  MobileNetV3('small', width=w)  [tf_]mobilenetv3_small_050 ... _100 MobileNetV3Small(alpha=w)

timm: padding 'symmetric', BatchNorm eps 1e-5 (tf_*: 'same', 1e-3). Keras: 'same', eps 1e-3 (V3 with
minimalistic=False, include_preprocessing=False). Activations: V1 and V2 ReLU6 in both; V3 as the tables.

small_input: for 28-32 px images the stem and the first stride-2 block run at stride 1 (total stride 8
instead of 32) with the same weights, so ImageNet weights still load.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax

from lightcls.models.layers import (ACTIVATIONS, Classifier, Conv, ConvBNAct, LayerConfig, SqueezeExcite,
                                   make_divisible, pool_flat)

SE_RATIO = 0.25  # V3's squeeze-excite width, as a fraction of the block's hidden width


class Block(NamedTuple):
  kernel: int        # of the depthwise conv
  expansion: float   # hidden width = input channels * expansion (1: no expand conv)
  out: int           # output channels (before width scaling)
  se: bool
  act: str
  stride: int


def _repeat(kernel: int, expansion: float, out: int, se: bool, act: str, stride: int, n: int
            ) -> tuple[Block, ...]:
  """n blocks of one stage; only the first strides."""
  return tuple(Block(kernel, expansion, out, se, act, stride if i == 0 else 1) for i in range(n))


class SeparableBlock(NamedTuple):  # V1: 3x3 depthwise, 1x1 pointwise, both with MobileNetV1.act
  out: int
  stride: int


# V1 (paper Table 1).
V1_BLOCKS: tuple[SeparableBlock, ...] = tuple(SeparableBlock(c, s) for c, s in (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)))

# V2 (paper Table 2): rows t (expansion), c (out), n (repeats), s (stride of the first).
V2_BLOCKS: tuple[Block, ...] = sum((_repeat(3, t, c, False, 'relu6', s, n) for t, c, n, s in (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))), ())

# V3 (paper Tables 1 and 2), expansion as a ratio of the block's input channels (as timm and Keras scale).
RE, HS = 'relu', 'hard_swish'
V3_LARGE_BLOCKS: tuple[Block, ...] = (
    Block(3, 1, 16, False, RE, 1),
    Block(3, 4, 24, False, RE, 2), Block(3, 3, 24, False, RE, 1),
    *_repeat(5, 3, 40, True, RE, 2, 3),
    Block(3, 6, 80, False, HS, 2), Block(3, 2.5, 80, False, HS, 1),
    Block(3, 2.3, 80, False, HS, 1), Block(3, 2.3, 80, False, HS, 1),
    *_repeat(3, 6, 112, True, HS, 1, 2),
    *_repeat(5, 6, 160, True, HS, 2, 3),
)
V3_SMALL_BLOCKS: tuple[Block, ...] = (
    Block(3, 1, 16, True, RE, 2),
    Block(3, 72 / 16, 24, False, RE, 2), Block(3, 88 / 24, 24, False, RE, 1),
    Block(5, 4, 40, True, HS, 2), Block(5, 6, 40, True, HS, 1), Block(5, 6, 40, True, HS, 1),
    Block(5, 3, 48, True, HS, 1), Block(5, 3, 48, True, HS, 1),
    *_repeat(5, 6, 96, True, HS, 2, 3),
)
# size: (blocks, last conv = 6 x the last block's channels (before width scaling), head conv)
V3_SIZES = {'large': (V3_LARGE_BLOCKS, 960, 1280), 'small': (V3_SMALL_BLOCKS, 576, 1024)}


def first_strided(blocks) -> int:
  """Index of the first stride-2 block: with the stem, the one `small_input` runs at stride 1."""
  return next(i for i, block in enumerate(blocks) if block.stride > 1)


class InvertedResidual(nn.Module):
  """[1x1 expand] -> depthwise -> [SE] -> 1x1 project [-> act] [+ x]; each conv followed by BatchNorm."""
  features: int
  kernel: int = 3
  expansion: float = 1.0
  stride: int = 1
  act: str = 'relu6'
  se: bool = False
  project_act: str | None = None  # V1: the activation; V2 / V3: linear bottleneck
  residual: bool = True           # shortcut where the shapes allow (V1 never has one)
  strided: bool = True            # False: a stride-2 block keeps its layers but runs them at stride 1
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hidden = make_divisible(x.shape[-1] * self.expansion, 8)
    y = x
    if self.expansion != 1:
      y = ConvBNAct(hidden, 1, act=self.act, layer=self.layer, name='expand')(y, train)
    stride = self.stride if self.strided else 1
    y = ConvBNAct(None, self.kernel, stride, act=self.act, layer=self.layer, name='dw')(y, train)
    if self.se:
      y = SqueezeExcite(make_divisible(hidden * SE_RATIO, 8), act='relu', gate='hard_sigmoid',
                        layer=self.layer, name='se')(y)
    y = ConvBNAct(self.features, 1, act=self.project_act, layer=self.layer, name='project')(y, train)
    if self.residual and self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


def inverted_residuals(x: jax.Array, blocks: tuple[Block, ...], channels: Callable[[float], int],
                       small_input: bool, layer: LayerConfig, train: bool) -> jax.Array:
  """The blocks of V2 / V3 as `block{i}` submodules of the calling model (call from its __call__)."""
  first = first_strided(blocks)
  for index, block in enumerate(blocks):
    x = InvertedResidual(channels(block.out), block.kernel, block.expansion, block.stride, block.act,
                         block.se, strided=not (small_input and index == first), layer=layer,
                         name=f'block{index}')(x, train)
  return x


class MobileNetV1(nn.Module):
  """MobileNetV1 with width multiplier alpha = `width` (Keras MobileNet(alpha), timm mobilenetv1_*).

  Stem 3x3 conv-BN-act, 13 depthwise-separable blocks, global pool, classifier; no head layer. act: ReLU6
  as Keras, timm and TF-slim (the paper writes ReLU). dropout None: 1e-3, Keras's and TF-slim's.
  """
  num_classes: int
  width: float = 1.0
  dropout: float | None = None
  act: str = 'relu6'
  small_input: bool = False
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'  # linear | cosine (layers.Classifier)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    channels = lambda c: make_divisible(c * self.width, 8)
    stem_stride = 1 if self.small_input else 2
    x = ConvBNAct(channels(32), 3, stem_stride, act=self.act, layer=self.layer, name='stem')(x, train)
    first = first_strided(V1_BLOCKS)
    for index, block in enumerate(V1_BLOCKS):
      x = InvertedResidual(channels(block.out), 3, 1, block.stride, self.act, project_act=self.act,
                           residual=False, strided=not (self.small_input and index == first),
                           layer=self.layer, name=f'block{index}')(x, train)
    features = pool_flat(x)
    dropout = 1e-3 if self.dropout is None else self.dropout
    logits = Classifier(self.num_classes, dropout, self.layer, self.classifier,
                        name='classifier')(features, train)
    return (logits, features) if return_features else logits


class MobileNetV2(nn.Module):
  """MobileNetV2 with width multiplier alpha = `width` (Keras MobileNetV2(alpha), timm mobilenetv2_*).

  Stem 3x3 conv-BN-ReLU6, 17 inverted residual blocks, last 1x1 conv-BN-ReLU6 to head_features channels
  (None: max(1280, 1280 * width), as the paper, Keras and timm), global pool, classifier. dropout None:
  0.2, TF-slim's (Keras has none).
  """
  num_classes: int
  width: float = 1.0
  dropout: float | None = None
  head_features: int | None = None
  small_input: bool = False
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'  # linear | cosine (layers.Classifier)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    channels = lambda c: make_divisible(c * self.width, 8)
    stem_stride = 1 if self.small_input else 2
    x = ConvBNAct(channels(32), 3, stem_stride, act='relu6', layer=self.layer, name='stem')(x, train)
    x = inverted_residuals(x, V2_BLOCKS, channels, self.small_input, self.layer, train)
    head = self.head_features if self.head_features is not None else max(1280, channels(1280))
    x = ConvBNAct(head, 1, act='relu6', layer=self.layer, name='last')(x, train)
    features = pool_flat(x)
    dropout = 0.2 if self.dropout is None else self.dropout
    logits = Classifier(self.num_classes, dropout, self.layer, self.classifier,
                        name='classifier')(features, train)
    return (logits, features) if return_features else logits


class MobileNetV3(nn.Module):
  """MobileNetV3 Small or Large (`size`) with width multiplier `width` (ImageNet weights: 0.5 to 1.0).

  Stem 3x3 conv-BN-hard-swish, the blocks, last 1x1 conv-BN-hard-swish, global pool, head 1x1 conv with
  bias (head_features; None: 1280 Large / 1024 Small) and hard-swish, classifier (dropout None: 0.2).
  Above width 1 timm and Keras part ways (Keras keeps the 16-channel stem and scales the head); this
  follows timm.
  """
  num_classes: int
  size: str = 'large'
  width: float = 1.0
  dropout: float | None = None
  head_features: int | None = None
  small_input: bool = False
  layer: LayerConfig = LayerConfig()
  classifier: str = 'linear'  # linear | cosine (layers.Classifier)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    if self.size not in V3_SIZES:
      raise ValueError(f'unknown MobileNetV3 size {self.size!r}; choose one of {sorted(V3_SIZES)}')
    blocks, last, head = V3_SIZES[self.size]
    channels = lambda c: make_divisible(c * self.width, 8)
    stem_stride = 1 if self.small_input else 2
    stem = 16 if self.width < 0.75 else channels(16)  # timm's fix_stem below 0.75 (Keras: always 16)
    x = ConvBNAct(stem, 3, stem_stride, act='hard_swish', layer=self.layer, name='stem')(x, train)
    x = inverted_residuals(x, blocks, channels, self.small_input, self.layer, train)
    x = ConvBNAct(channels(last), 1, act='hard_swish', layer=self.layer, name='last')(x, train)
    x = pool_flat(x)
    head = self.head_features if self.head_features is not None else head
    x = Conv(head, use_bias=True, layer=self.layer, name='head')(x[:, None, None])
    features = ACTIVATIONS['hard_swish'](x).reshape(x.shape[0], -1)
    dropout = 0.2 if self.dropout is None else self.dropout
    logits = Classifier(self.num_classes, dropout, self.layer, self.classifier,
                        name='classifier')(features, train)
    return (logits, features) if return_features else logits
