"""Building blocks shared by every model: convolutions, BatchNorm, activations, squeeze-excite.

All models take their convolutions from here so that the implementation of depthwise and pointwise
convolutions can be chosen per backend in one place (see DESIGN.md, "Known XLA weakness").
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def hard_sigmoid(x: jax.Array) -> jax.Array:
  # relu6(x + 3) / 6, the form used by MobileNetV3 and GhostNet (not jax.nn.hard_sigmoid's slope).
  return jax.nn.relu6(x + 3.0) / 6.0


ACTIVATIONS: dict[str, Activation] = {
    'relu': jax.nn.relu,
    'hard_sigmoid': hard_sigmoid,
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
  """Rounds a channel count to a multiple of `divisor`, never going more than 10% down (timm rule)."""
  min_value = min_value or divisor
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < round_limit * value:
    rounded += divisor
  return rounded


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """Options every layer of a model shares.

  bn_momentum is in Flax's sense (running = momentum * running + (1 - momentum) * batch), i.e. one minus
  PyTorch's. padding: 'symmetric' pads (k - 1) // 2 on each side as PyTorch/timm do; 'same' is TF/Keras
  "SAME" padding, asymmetric on stride 2.
  """
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  padding: str = 'symmetric'
  dtype: str = 'float32'

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


PADDINGS = ('symmetric', 'same')


def conv_padding(kernel: int, stride: int, mode: str):
  """Returns the padding argument of a convolution for the given padding flavour."""
  if mode == 'same':
    return 'SAME'
  if mode == 'symmetric':
    pad = ((stride - 1) + (kernel - 1)) // 2
    return ((pad, pad), (pad, pad))
  raise ValueError(f'unknown padding {mode!r}; choose one of {PADDINGS}')


class BatchNorm(nn.Module):
  """BatchNorm with the model's momentum/eps; statistics span the whole (global, sharded) batch.

  The variance is computed in two passes, E[(x - E[x])^2], as PyTorch does: Flax's default one-pass
  E[x^2] - E[x]^2 cancels catastrophically when a channel's mean dwarfs its spread (measured: 8e-3
  relative gradient error against float64 in GhostNet's last block at 32 px, 4e-6 with two passes, at
  no measurable cost on CPU; experiments/RESULTS.md).
  """
  layer: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return nn.BatchNorm(use_running_average=not train, momentum=self.layer.bn_momentum,
                        epsilon=self.layer.bn_eps, dtype=self.layer.compute_dtype,
                        param_dtype=jnp.float32, use_fast_variance=False)(x)


class Conv(nn.Module):
  """A k x k convolution (groups=1) with the model's padding flavour and compute dtype."""
  features: int
  kernel: int = 1
  stride: int = 1
  use_bias: bool = False
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                   padding=conv_padding(self.kernel, self.stride, self.layer.padding),
                   use_bias=self.use_bias, dtype=self.layer.compute_dtype, param_dtype=jnp.float32,
                   kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))(x)


class DepthwiseConv(nn.Module):
  """A k x k depthwise convolution (one filter per channel); kernel shape (k, k, 1, C) as nn.Conv's."""
  kernel: int = 3
  stride: int = 1
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    return nn.Conv(channels, (self.kernel, self.kernel), (self.stride, self.stride),
                   padding=conv_padding(self.kernel, self.stride, self.layer.padding),
                   feature_group_count=channels, use_bias=False, dtype=self.layer.compute_dtype,
                   param_dtype=jnp.float32,
                   kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))(x)


class ConvBNAct(nn.Module):
  """Convolution (dense or depthwise) -> BatchNorm -> optional activation."""
  features: int | None = None  # None: depthwise, keeps the channel count
  kernel: int = 1
  stride: int = 1
  act: str | None = 'relu'
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.features is None:
      x = DepthwiseConv(self.kernel, self.stride, self.layer, name='conv')(x)
    else:
      x = Conv(self.features, self.kernel, self.stride, layer=self.layer, name='conv')(x)
    x = BatchNorm(self.layer, name='bn')(x, train)
    return ACTIVATIONS[self.act](x) if self.act else x


class SqueezeExcite(nn.Module):
  """Channel attention: global average pool -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> gate."""
  reduced: int
  act: str = 'relu'
  gate: str = 'hard_sigmoid'
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = Conv(self.reduced, use_bias=True, layer=self.layer, name='reduce')(s)
    s = Conv(x.shape[-1], use_bias=True, layer=self.layer, name='expand')(ACTIVATIONS[self.act](s))
    return x * ACTIVATIONS[self.gate](s)
