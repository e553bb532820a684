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


def _taps(x: jax.Array, kernel: int, stride: int, padding: Padding):
  """Yields ((a, b), view) for every tap: the padded input that tap multiplies, at output resolution."""
  height = _output_size(x.shape[1], kernel, stride, padding[0])
  width = _output_size(x.shape[2], kernel, stride, padding[1])
  padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  for a in range(kernel):
    for b in range(kernel):
      yield (a, b), lax.slice(padded, (0, a, b, 0),
                              (x.shape[0], a + (height - 1) * stride + 1, b + (width - 1) * stride + 1,
                               x.shape[3]), (1, stride, stride, 1))


def _tap_sum(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  out = None
  for (a, b), view in _taps(x, kernel.shape[0], stride, padding):
    term = view * kernel[a, b, 0]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Depthwise convolution as a sum of shifted inputs; kernel (k, k, 1, C) as nn.Conv's."""
  return _tap_sum(x, kernel, stride, padding)


def _depthwise_taps_fwd(x, kernel, stride, padding):
  return _tap_sum(x, kernel, stride, padding), (x, kernel)


def _depthwise_taps_bwd(stride, padding, residuals, grad):
  x, kernel = residuals
  # The input gradient: transpose of the (linear in x) tap sum, i.e. pads and interior pads of `grad`.
  _, input_vjp = jax.vjp(lambda x_: _tap_sum(x_, kernel, stride, padding), x)
  (grad_x,) = input_vjp(grad)
  # The filter gradient: each tap's view times the output gradient, summed over batch and space, in
  # float32 for bf16 inputs (a sum over N*H*W products). One variadic reduction over the width axis makes
  # all k*k sums in a single pass over x and grad (on CPU 6x faster than k*k separate reductions, which
  # each read both again); the remaining sum over N and H is small.
  grad_f32 = grad.astype(jnp.float32)
  products = [view.astype(jnp.float32) * grad_f32 for _, view in _taps(x, kernel.shape[0], stride, padding)]
  row_sums = lax.reduce(products, [jnp.zeros((), jnp.float32)] * len(products), _add_each, (2,))
  grad_kernel = jnp.stack([rows.sum((0, 1)) for rows in row_sums]).reshape(kernel.shape).astype(kernel.dtype)
  return grad_x, grad_kernel


def _add_each(a: list[jax.Array], b: list[jax.Array]) -> list[jax.Array]:
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


def pointwise_conv(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
  """1x1 convolution of NHWC `x` with a (1, 1, C_in, C_out) kernel: a matrix product over channels."""
  if impl == 'fast':
    return jnp.einsum('nhwc,cd->nhwd', x, kernel[0, 0])
  if impl == 'xla':
    return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  raise ValueError(f'unknown convolution implementation {impl!r}; choose one of {IMPLEMENTATIONS}')
