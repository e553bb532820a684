"""Depthwise and pointwise convolutions in the formulations XLA compiles well, beside XLA's own.

XLA lowers a grouped convolution with `feature_group_count=C` poorly, worst on CPU and in the backward
pass, where the filter gradient becomes a dense convolution C times larger than needed (DESIGN.md, "Known
XLA weakness"). A depthwise convolution is also just a sum over its k x k taps of a shifted input times
that tap's per-channel weight; written so, it is elementwise work XLA fuses into a few loops. Its filter
gradient is one (variadic) reduction of tap x output-gradient products; its input gradient is the transpose of the
shifts (pads and strided slices), which XLA differentiates well on its own.

Every function takes the kernel in `nn.Conv`'s layout, so parameters, checkpoints and weight ports do not
depend on the implementation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]

IMPLEMENTATIONS = ('xla', 'fast')

# Options for every jit that runs a model. XLA:CPU drops optimization barriers before fusion (its
# cse_barrier_expander pass), which would undo `_materialized`; without that pass they stay and are free
# at run time. The effect on MobileNetV2's train step is in experiments/RESULTS.md (CPU speed). An XLA
# that renames the pass ignores the option and only loses the speed.
COMPILER_OPTIONS = {'xla_disable_hlo_passes': 'cse_barrier_expander'}


def explicit_padding(size: tuple[int, int], kernel: int, stride: int, mode: str) -> Padding:
  """Pads (before, after) of each spatial axis: 'symmetric' as PyTorch, 'same' as TF (more after)."""
  if mode == 'symmetric':
    pad = ((stride - 1) + (kernel - 1)) // 2
    return ((pad, pad), (pad, pad))
  if mode == 'same':
    pads = []
    for length in size:
      total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
      pads.append((total // 2, total - total // 2))
    return tuple(pads)
  raise ValueError(f"unknown padding {mode!r}; choose 'symmetric' or 'same'")


def _output_size(length: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
  return (length + pads[0] + pads[1] - kernel) // stride + 1


def _output_shape(x: jax.Array, kernel: int, stride: int, padding: Padding) -> tuple[int, int]:
  return (_output_size(x.shape[1], kernel, stride, padding[0]),
          _output_size(x.shape[2], kernel, stride, padding[1]))


# Two forms of the k*k tap views (the padded input each tap multiplies, at output resolution), each the
# faster one somewhere on CPU (MobileNetV2, 224 px, batch 32; experiments/RESULTS.md, "CPU speed"):
# slices of one padded copy of x in the tap sum (3x faster than per-tap pads there) and in the filter
# gradient's reduction (2.8x); per-tap pads in the input gradient, whose transposes are pads of the output
# gradient (3x faster than the transposes of strided slices, which pad with interior zeros).

def _sliced_taps(x: jax.Array, kernel: int, stride: int, padding: Padding) -> list[jax.Array]:
  """The views as strided slices of x padded once; row-major over the taps."""
  height, width = _output_shape(x, kernel, stride, padding)
  padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  return [lax.slice(padded, (0, a, b, 0),
                    (x.shape[0], a + (height - 1) * stride + 1, b + (width - 1) * stride + 1, x.shape[3]),
                    (1, stride, stride, 1))
          for a in range(kernel) for b in range(kernel)]


def _padded_taps(x: jax.Array, kernel: int, stride: int, padding: Padding) -> list[jax.Array]:
  """The views as one lax.pad of x each (negative pads crop), strided when stride > 1."""
  height, width = _output_shape(x, kernel, stride, padding)
  zero = jnp.zeros((), x.dtype)
  views = []
  for a in range(kernel):
    for b in range(kernel):
      # Tap (a, b) reads rows a - pad_before + stride * i, i < height: pad (or crop) x to exactly that span.
      rows = (padding[0][0] - a, (height - 1) * stride + a - padding[0][0] - (x.shape[1] - 1), 0)
      cols = (padding[1][0] - b, (width - 1) * stride + b - padding[1][0] - (x.shape[2] - 1), 0)
      view = lax.pad(x, zero, ((0, 0, 0), rows, cols, (0, 0, 0)))
      views.append(lax.slice(view, (0, 0, 0, 0), view.shape, (1, stride, stride, 1)) if stride > 1 else view)
  return views


def _tap_sum(views: list[jax.Array], kernel: jax.Array) -> jax.Array:
  weights = kernel.reshape(-1, kernel.shape[-1])
  out = views[0] * weights[0]
  for view, weight in zip(views[1:], weights[1:]):
    out = out + view * weight
  return out


def _materialized(x: jax.Array) -> jax.Array:
  """x, read from memory by its consumers: a tap sum reads every element k*k times, and XLA would fuse x's
  producer (BatchNorm and activation, or their gradients) into it and recompute it for each read (2-3x
  slower on CPU). Holds only where the barrier survives compilation: see COMPILER_OPTIONS."""
  return lax.optimization_barrier(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Depthwise convolution as a sum of shifted inputs; kernel (k, k, 1, C) as nn.Conv's."""
  return _tap_sum(_sliced_taps(_materialized(x), kernel.shape[0], stride, padding), kernel)


def _depthwise_taps_fwd(x, kernel, stride, padding):
  x = _materialized(x)
  return _tap_sum(_sliced_taps(x, kernel.shape[0], stride, padding), kernel), (x, kernel)


def _depthwise_taps_bwd(stride, padding, residuals, grad):
  x, kernel = residuals
  grad = _materialized(grad)
  # The input gradient: the transpose of the tap sum (linear in x), i.e. a sum of pads of `grad`.
  _, input_vjp = jax.vjp(lambda x_: _tap_sum(_padded_taps(x_, kernel.shape[0], stride, padding), kernel), x)
  (grad_x,) = input_vjp(grad)
  # The filter gradient: each tap's view times the output gradient, summed over batch and space, in
  # float32 for bf16 inputs (a sum over N*H*W products). One variadic reduction over the width axis makes
  # all k*k sums in a single pass over x and grad (on CPU 6x faster than k*k separate reductions, which
  # each read both again); the remaining sum over N and H is small.
  grad_f32 = grad.astype(jnp.float32)
  products = [view.astype(jnp.float32) * grad_f32 for view in _sliced_taps(x, kernel.shape[0], stride, padding)]
  row_sums = lax.reduce(products, [jnp.zeros((), jnp.float32)] * len(products), add_each, (2,))
  grad_kernel = jnp.stack([rows.sum((0, 1)) for rows in row_sums]).reshape(kernel.shape).astype(kernel.dtype)
  return grad_x, grad_kernel


def add_each(a: list[jax.Array], b: list[jax.Array]) -> list[jax.Array]:
  """Elementwise sums of two lists: the computation of a variadic lax.reduce of sums."""
  return [p + q for p, q in zip(a, b)]


depthwise_taps.defvjp(_depthwise_taps_fwd, _depthwise_taps_bwd)


def depthwise_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Depthwise convolution through XLA's grouped convolution (the reference)."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  feature_group_count=x.shape[-1])


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding,
                   impl: str) -> jax.Array:
  """Depthwise convolution of NHWC `x` with a (k, k, 1, C) kernel by the named implementation."""
  if impl == 'fast':
    return depthwise_taps(x, kernel, stride, padding)
  if impl == 'xla':
    return depthwise_xla(x, kernel, stride, padding)
  raise ValueError(f'unknown convolution implementation {impl!r}; choose one of {IMPLEMENTATIONS}')


@jax.custom_vjp
def pointwise_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution as one matrix product of the (N*H*W, C_in) input with the (C_in, C_out) kernel."""
  return _rows(x) @ kernel[0, 0]


def _rows(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


def _pointwise_dot_fwd(x, kernel):
  return pointwise_dot(x, kernel), (x, kernel)


def _pointwise_dot_bwd(residuals, grad):
  x, kernel = residuals
  rows, grad_rows = _rows(x), _rows(grad)
  grad_x = lax.dot_general(grad_rows, kernel[0, 0], (((1,), (1,)), ((), ()))).reshape(x.shape)
  # The filter gradient contracts the (N*H*W) row axis of both operands in place. Autodiff's form of the
  # same product leaves XLA a transposed copy of the output gradient, fused into its producer with
  # strided reads: 5x slower than this dot on CPU (352 ms against ~20 ms for MobileNetV2's first block).
  grad_kernel = lax.dot_general(rows, grad_rows, (((0,), (0,)), ((), ())),
                                preferred_element_type=jnp.float32)
  return grad_x, grad_kernel.astype(kernel.dtype).reshape(kernel.shape)


pointwise_dot.defvjp(_pointwise_dot_fwd, _pointwise_dot_bwd)


def pointwise_conv(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
  """1x1 convolution of NHWC `x` with a (1, 1, C_in, C_out) kernel: a matrix product over channels."""
  if impl == 'fast':
    return pointwise_dot(x, kernel).reshape(*x.shape[:-1], kernel.shape[-1])
  if impl == 'xla':
    return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  raise ValueError(f'unknown convolution implementation {impl!r}; choose one of {IMPLEMENTATIONS}')
