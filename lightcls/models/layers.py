"""Building blocks shared by every model: convolutions, BatchNorm, activations, squeeze-excite, drop path.

All models take their convolutions from here so that the implementation of depthwise and pointwise
convolutions is chosen per backend in one place (`convolutions.py`; DESIGN.md, "Known XLA weakness").
Parameter shapes are nn.Conv's whatever the implementation, so checkpoints and weight ports do not change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lightcls.models import convolutions

Activation = Callable[[jax.Array], jax.Array]


def hard_sigmoid(x: jax.Array) -> jax.Array:
  # relu6(x + 3) / 6, the form of MobileNetV3, GhostNet, timm and Keras (jax.nn.hard_sigmoid is the same).
  return jax.nn.relu6(x + 3.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
  return x * hard_sigmoid(x)


ACTIVATIONS: dict[str, Activation] = {
    'relu': jax.nn.relu,
    'relu6': jax.nn.relu6,
    'swish': jax.nn.silu,
    'hard_swish': hard_swish,
    'sigmoid': jax.nn.sigmoid,
    'hard_sigmoid': hard_sigmoid,
}


def clamped_hard_swish(x: jax.Array) -> jax.Array:
  """hard_swish written as x * (clip(x / 3, -1, 1) / 2 + 1/2): the same function through operations that
  LiteRT's XNNPACK delegate runs in int8.

  The TFLite converter turns hard_swish's usual form into its HARD_SWISH op, and a clip to [-3, 3] into
  MINIMUM and MAXIMUM; XNNPACK runs none of them in int8, so each hard-swish split the graph (int8
  MobileNetV3-Small: 21 pieces, 1.0-4.9 ms against 1.1-1.2 ms in float32). A clip to [-1, 1] after a
  multiplication becomes a MUL with a fused RELU_N1_TO_1, which it runs: one piece up to the softmax
  (experiments/RESULTS.md, "Inference latency").
  """
  return x * (jnp.clip(x * (1.0 / 3.0), -1.0, 1.0) * 0.5 + 0.5)


@contextlib.contextmanager
def activation_forms(**forms: Activation) -> Iterator[None]:
  """Models traced inside this context compute the named activations with `forms` (the same functions
  through other operations, for an exporter); ACTIVATIONS is restored on exit."""
  saved = {name: ACTIVATIONS[name] for name in forms}
  ACTIVATIONS.update(forms)
  try:
    yield
  finally:
    ACTIVATIONS.update(saved)


PADDINGS = ('symmetric', 'same')
CONV_IMPLS = ('auto',) + convolutions.IMPLEMENTATIONS


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
  """Rounds a channel count to a multiple of `divisor`, never going more than 10% down (timm/Keras rule)."""
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
  "SAME" padding, asymmetric on stride 2. conv_impl: how depthwise and 1x1 convolutions are computed
  ('auto': the measured fastest for the backend, see `impl`). frozen_blocks: top-level blocks whose
  BatchNorm layers always use (and never update) their running statistics, as Keras' frozen layers do.
  fold_batch_norm: each ConvBNAct is a convolution with a bias and no BatchNorm, for inference and export
  with variables from `folded_batch_norm`.
  """
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  padding: str = 'symmetric'
  dtype: str = 'float32'
  conv_impl: str = 'auto'
  frozen_blocks: tuple[str, ...] = ()
  fold_batch_norm: bool = False

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def impl(self) -> str:
    if self.conv_impl != 'auto':
      return self.conv_impl
    # On GPU XLA's grouped convolution is within 0.7-1.1x of cuDNN and the tap sum up to 40x slower
    # (experiments/RESULTS.md, "Depthwise convolution on an H100"). On CPU XLA's grouped convolution and its
    # filter gradient are tens of times slower than the tap sum (experiments/bench_cpu.py); TPUs are not
    # measured yet and keep XLA's.
    return 'fast' if jax.default_backend() == 'cpu' else 'xla'


def kernel_init() -> nn.initializers.Initializer:
  # He (fan-out) normal, as timm and torchvision initialise convolutions.
  return nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Conv(nn.Module):
  """A dense k x k convolution; kernel (k, k, C_in, features) and optional bias, as nn.Conv's."""
  features: int
  kernel: int = 1
  stride: int = 1
  use_bias: bool = False
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', kernel_init(), (self.kernel, self.kernel, x.shape[-1], self.features),
                        jnp.float32)
    dtype = self.layer.compute_dtype
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if self.kernel == 1 and self.stride == 1:
      y = convolutions.pointwise_conv(x, kernel, self.layer.impl)
    else:
      padding = convolutions.explicit_padding(x.shape[1:3], self.kernel, self.stride, self.layer.padding)
      y = convolutions.dense_conv(x, kernel, self.stride, padding, self.layer.impl)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


class DepthwiseConv(nn.Module):
  """A k x k depthwise convolution (one filter per channel); kernel (k, k, 1, C) as nn.Conv's."""
  kernel: int = 3
  stride: int = 1
  use_bias: bool = False
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', kernel_init(), (self.kernel, self.kernel, 1, x.shape[-1]), jnp.float32)
    dtype = self.layer.compute_dtype
    padding = convolutions.explicit_padding(x.shape[1:3], self.kernel, self.stride, self.layer.padding)
    y = convolutions.depthwise_conv(x.astype(dtype), kernel.astype(dtype), self.stride, padding, self.layer.impl)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (x.shape[-1],), jnp.float32).astype(dtype)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalized_batch(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, act: str | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all but the channel axis, then the activation `act` (a name in
  ACTIVATIONS, or None): (output, batch mean, biased batch variance).

  Statistics in float32 with the two-pass variance E[(x - E[x])^2] (see `batch_norm`); the output in x's
  dtype. The hand-written backward pass keeps only x and per-channel vectors from the forward pass,
  recomputes the normalised x and the activation's derivative where it needs them, and takes the two
  sums it needs. Autodiff of the same formulas stores x - E[x] and the activation's intermediate values
  (for swish its sigmoid) and makes four sums: on CPU a third of MobileNetV2's train step was BatchNorm.
  The mean and variance outputs feed only the running statistics: their gradients are taken as zero.
  """
  return _normalized_batch_fwd(x, scale, bias, epsilon, act)[0]


def _normalized(x, mean, inv, scale, bias):
  return ((x.astype(jnp.float32) - mean) * (inv * scale) + bias).astype(x.dtype)


def _normalized_batch_fwd(x, scale, bias, epsilon, act):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axes)
  var = jnp.mean(jnp.square(x32 - mean), axes)
  inv = jax.lax.rsqrt(var + epsilon)
  y = _normalized(x, mean, inv, scale, bias)
  return (ACTIVATIONS[act](y) if act else y, mean, var), (x, mean, inv, scale, bias)


def _normalized_batch_bwd(epsilon, act, residuals, grads):
  del epsilon  # only the forward pass adds it
  x, mean, inv, scale, bias = residuals
  grad = grads[0]
  if act:
    # The barrier keeps XLA from merging the recomputed activation with the forward pass's, which would
    # store the activation's intermediate values after all (see COMPILER_OPTIONS).
    y = _normalized(*jax.lax.optimization_barrier(residuals))
    grad = jax.vjp(ACTIVATIONS[act], y)[1](grad)[0]
  grad = grad.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centered = x.astype(jnp.float32) - mean
  grad_bias, grad_centered = jnp.sum(grad, axes), jnp.sum(grad * centered, axes)
  grad_scale = grad_centered * inv
  grad_x = (scale * inv) * (grad - grad_bias / count - centered * (inv * inv * grad_centered / count))
  return grad_x.astype(x.dtype), grad_scale, grad_bias


normalized_batch.defvjp(_normalized_batch_fwd, _normalized_batch_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over the channel axis with nn.BatchNorm's variables, initialisation and momentum, and an
  optional activation after it (`act`, fused into the training-mode backward pass).

  In training, batch statistics (`normalized_batch`) and a running-average update; in evaluation, and
  always inside a frozen top-level block (as Keras' frozen layers), the running statistics.
  """
  training: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  frozen_blocks: tuple[str, ...] = ()
  act: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x = x.astype(self.dtype)
    frozen = bool(self.scope.path) and self.scope.path[0] in self.frozen_blocks
    if not self.training or frozen:
      y = _normalized(x, running_mean.value, jax.lax.rsqrt(running_var.value + self.epsilon), scale, bias)
      return ACTIVATIONS[self.act](y) if self.act else y
    y, mean, var = normalized_batch(x, scale, bias, self.epsilon, self.act)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return y


def batch_norm(layer: LayerConfig, train: bool, act: str | None = None, name: str | None = None) -> BatchNorm:
  """BatchNorm with the model's momentum/eps, then `act`; statistics span the whole (global, sharded) batch.

  The variance is computed in two passes, E[(x - E[x])^2], as PyTorch does: Flax's default one-pass
  E[x^2] - E[x]^2 cancels catastrophically when a channel's mean dwarfs its spread (measured: 8e-3
  relative gradient error against float64 in GhostNet's last block at 32 px, 4e-6 with two passes, at
  no measurable cost on CPU; experiments/RESULTS.md).
  """
  return BatchNorm(training=train, momentum=layer.bn_momentum, epsilon=layer.bn_eps,
                   dtype=layer.compute_dtype, frozen_blocks=layer.frozen_blocks, act=act, name=name)


class ConvBNAct(nn.Module):
  """Convolution (dense, or depthwise when `features` is None) -> BatchNorm -> optional activation."""
  features: int | None = None
  kernel: int = 1
  stride: int = 1
  act: str | None = 'relu'
  layer: LayerConfig = LayerConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    folded = self.layer.fold_batch_norm
    if self.features is None:
      x = DepthwiseConv(self.kernel, self.stride, folded, self.layer, name='conv')(x)
    else:
      x = Conv(self.features, self.kernel, self.stride, folded, self.layer, name='conv')(x)
    if folded:
      return ACTIVATIONS[self.act](x) if self.act else x
    return batch_norm(self.layer, train, act=self.act, name='bn')(x)


def folded_batch_norm(variables: dict, epsilon: float) -> dict:
  """`variables` of a model for the same model built with `LayerConfig(fold_batch_norm=True)`: each
  ConvBNAct's BatchNorm, in evaluation mode y = (x - mean) * scale / sqrt(var + eps) + bias, becomes a
  per-output-channel factor on its convolution's kernel and a bias. Other BatchNorm layers are kept.
  Computed with numpy on the host: a one-off that op-by-op dispatch would make take seconds."""

  def fold(params: dict, stats: dict) -> tuple[dict, dict]:
    if 'conv' in params and 'bn' in params:  # a ConvBNAct (no other module has both children)
      bn, moments = jax.tree.map(np.asarray, (params['bn'], stats['bn']))
      factor = bn['scale'] / np.sqrt(moments['var'] + np.float32(epsilon))
      return {'conv': {'kernel': np.asarray(params['conv']['kernel']) * factor,
                       'bias': bn['bias'] - moments['mean'] * factor}}, {}
    new_params, new_stats = {}, {}
    for name, value in params.items():
      if isinstance(value, dict):
        value, inner = fold(value, stats.get(name, {}))
        if inner:
          new_stats[name] = inner
      new_params[name] = value
    new_stats.update({k: v for k, v in stats.items() if k not in params})
    return new_params, new_stats

  params, stats = fold(variables['params'], variables.get('batch_stats', {}))
  return {'params': params, 'batch_stats': stats} if stats else {'params': params}


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


class DropPath(nn.Module):
  """Stochastic depth: zeroes a residual branch per example with probability `rate`, scaling the rest."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis`, as torch's F.normalize; finite gradient at x = 0 (a norm's is not)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


class CosineDense(nn.Module):
  """Cosines between the features and each class's weight column: both L2-normalised, no bias.

  The kernel has nn.Dense's shape, name and initialisation. It runs in float32 whatever the compute dtype:
  it is a small matmul, and bfloat16's 8-bit mantissa would blur cosines that a margin of 0.35 and a scale
  of ~7 turn into large logit differences.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32)
    return l2_normalize(x.astype(jnp.float32)) @ l2_normalize(kernel, axis=0)


CLASSIFIERS = ('linear', 'cosine')


class Classifier(nn.Module):
  """Dropout -> the class scores (float32), as every model ends.

  kind 'linear': a dense layer with bias, the logits. 'cosine': cosines in [-1, 1] between the L2-normalised
  features and weight columns (AM-Softmax's head; losses.logit_scale turns them into logits).
  """
  num_classes: int
  dropout: float
  layer: LayerConfig = LayerConfig()
  kind: str = 'linear'

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> jax.Array:
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    if self.kind == 'cosine':
      return CosineDense(self.num_classes, name='fc')(x)
    if self.kind == 'linear':
      return nn.Dense(self.num_classes, dtype=self.layer.compute_dtype, param_dtype=jnp.float32,
                      name='fc')(x).astype(jnp.float32)
    raise ValueError(f'unknown classifier {self.kind!r}; choose one of {CLASSIFIERS}')


def pool_flat(x: jax.Array) -> jax.Array:
  """Global average pooling to (N, C)."""
  return jnp.mean(x, axis=(1, 2))
