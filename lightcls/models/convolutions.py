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


def _output_shape(shape: tuple[int, ...], kernel: int, stride: int, padding: Padding) -> tuple[int, int]:
  """Output rows and columns for an NHWC input of `shape`."""
  return (_output_size(shape[1], kernel, stride, padding[0]),
          _output_size(shape[2], kernel, stride, padding[1]))


# The tap views are slices of one padded copy of x: in the tap sum 3x faster on CPU than one lax.pad of x
# per tap, whose bounds tests XLA repeats for every element and tap, and 2.8x in the filter gradient's
# reduction (MobileNetV2, 224 px, batch 32; experiments/RESULTS.md, "CPU speed").
def _sliced_taps(x: jax.Array, kernel: int, stride: int, padding: Padding) -> list[jax.Array]:
  """The padded input each tap multiplies, at output resolution, row-major over the taps."""
  return _tap_views(_padded(x, padding), x.shape, kernel, stride, padding)


def _padded(x: jax.Array, padding: Padding) -> jax.Array:
  """x (N, H, W, C) padded with zeros by (before, after) of its rows and columns."""
  return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), *((a, b, 0) for a, b in padding), (0, 0, 0)))


def _tap_views(padded: jax.Array, shape: tuple[int, ...], kernel: int, stride: int,
               padding: Padding) -> list[jax.Array]:
  """Each tap's slice of `padded` (an input of `shape` padded by `padding`), at output resolution."""
  height, width = _output_shape(shape, kernel, stride, padding)
  return [lax.slice(padded, (0, a, b, 0),
                    (shape[0], a + (height - 1) * stride + 1, b + (width - 1) * stride + 1, shape[3]),
                    (1, stride, stride, 1))
          for a in range(kernel) for b in range(kernel)]


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


# Images of at least this many pixels get their padded copy written by their producer (`_held_padded`).
_PRODUCER_PAD_MIN_PIXELS = 16


# A tap sum reads a padded copy of its input. Held by the barrier, the padded copy, not the input, is what
# XLA writes: it fuses the pad into the input's producer (BatchNorm and activation, or their gradients),
# which saves a write and a read of the whole activation per depthwise layer and pass (train step at 224 px,
# batch 32, on CPU: up to 9% faster for each of the six models). On images of 2x2 and 1x1 pixels XLA copied
# each tap's slice of the held copy into a buffer of its own (GhostNet at 32 px: 157 copies against 23),
# and the step ran 5-12% slower; those keep the barrier on the input.
def _held_padded(x: jax.Array, padding: Padding) -> jax.Array:
  """x padded as `_padded`, read from memory by its consumers (see `_materialized`)."""
  if x.shape[1] * x.shape[2] >= _PRODUCER_PAD_MIN_PIXELS:
    return _materialized(_padded(x, padding))
  return _padded(_materialized(x), padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Depthwise convolution as a sum of shifted inputs; kernel (k, k, 1, C) as nn.Conv's."""
  return _depthwise_taps_fwd(x, kernel, stride, padding)[0]


def _depthwise_taps_fwd(x, kernel, stride, padding):
  """The tap sum, and as residuals the padded copy of x it reads and the kernel."""
  padded = _held_padded(x, padding)
  return _tap_sum(_tap_views(padded, x.shape, kernel.shape[0], stride, padding), kernel), (padded, kernel)


def _depthwise_taps_bwd(stride, padding, residuals, grad):
  padded, kernel = residuals
  shape = (padded.shape[0], padded.shape[1] - sum(padding[0]), padded.shape[2] - sum(padding[1]),
           kernel.shape[-1])
  # `grad` comes back as a slice of the padded copy that the input gradient holds.
  grad_x, grad = _input_gradient(grad, kernel, stride, padding, shape)
  # The filter gradient: each tap's view times the output gradient, summed over batch and space, in
  # float32 for bf16 inputs (a sum over N*H*W products).
  grad_f32 = grad.astype(jnp.float32)
  products = [view.astype(jnp.float32) * grad_f32
              for view in _tap_views(padded, shape, kernel.shape[0], stride, padding)]
  grad_kernel = jnp.stack(_tap_totals(products, kernel.shape[0])).reshape(kernel.shape).astype(kernel.dtype)
  return grad_x, grad_kernel


# The filter gradient's sums, in two passes. The first sums the products over blocks of a few image
# rows, in one variadic reduction for several taps, so that it reads x and grad once for all of them; the
# second sums the partial sums, a fraction of the size (a reduction YNNPACK runs). XLA:CPU writes a
# reduction as a loop per output element around a loop over the elements it sums. Over 4-8 rows it
# unrolls that inner loop, and the loop over channels, now the innermost, is vectorised. Against one
# reduction over the width, which XLA could not vectorise, on an Intel Xeon 1.7-3.9x faster
# (32x56x56x128: 8.1 against 26.3 ms; 5x5 on 32x28x28x240: 15.6 against 29.5 ms), and train steps at
# 224 px 11-22% faster (experiments/RESULTS.md, "CPU speed"). Kernels above 3x3 take a kernel row (k taps)
# per reduction: with all 25 taps of a 5x5 kernel the unrolled loop was not vectorised.
def _tap_totals(products: list[jax.Array], kernel: int) -> list[jax.Array]:
  """Each (N, H, W, C) product summed over N, H and W."""
  taps = kernel * kernel if kernel <= 3 else kernel
  spans = _row_spans(products[0].shape[1])
  totals = []
  for first in range(0, len(products), taps):
    group = products[first:first + taps]
    span_sums = [_block_sums([p[:, start:stop] for p in group], rows) for start, stop, rows in spans]
    totals += [functools.reduce(jnp.add, sums) for sums in zip(*span_sums)]
  return totals


def _row_spans(height: int) -> list[tuple[int, int, int]]:
  """(first row, end row, rows per block) of at most two spans of whole blocks that tile `height` rows:
  blocks of the most rows from 8 to 4 that divide it, else blocks of 8 rows and one of the rest."""
  rows = next((rows for rows in range(8, 3, -1) if height % rows == 0), min(8, height))
  whole = height - height % rows
  return [(0, whole, rows)] + ([(whole, height, height - whole)] if whole < height else [])


def _block_sums(products: list[jax.Array], rows: int) -> list[jax.Array]:
  """Each (N, H, W, C) product summed over N, H and W, with H summed in blocks of `rows` rows first."""
  n, height, width, channels = products[0].shape
  blocks = [p.reshape(n, height // rows, rows, width, channels) for p in products]
  zeros = [jnp.zeros((), jnp.float32)] * len(blocks)
  return [sums.sum((0, 1, 2)) for sums in lax.reduce(blocks, zeros, _add_each, (2,))]


def _input_gradient(grad: jax.Array, kernel: jax.Array, stride: int, padding: Padding,
                    input_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """The tap sum's input gradient, computed by phase of the input rows and columns, and `grad` as a slice
  of the padded copy it reads (so that the filter gradient reads the same buffer).

  Input row s*i + r receives only the taps a with a = r + pad_before (mod s), each from `grad` row
  i + (r + pad_before - a) / s. So each of the s*s phases is a tap sum over shifted views of `grad`, here
  slices of one padded copy, and the phases interleave into the gradient. Autodiff's transpose of the tap
  sum pads `grad` once per tap (with interior zeros when s > 1) and tests all k*k taps for every input
  element: on CPU 2-5x slower (EfficientNet-B0's stride-2 block at 112 px: 102 ms against 20 ms).
  """
  k = kernel.shape[0]
  rows, cols = -(-input_shape[1] // stride), -(-input_shape[2] // stride)
  # Per phase: (tap a, tap b, row shift, column shift) of the taps that reach it.
  phase_taps = {(r, c): [(a, b, dr, dc) for a, dr in _phase_shifts(r, padding[0][0], k, stride)
                         for b, dc in _phase_shifts(c, padding[1][0], k, stride)]
                for r in range(stride) for c in range(stride)}
  shifts = [(dr, dc) for taps in phase_taps.values() for _, _, dr, dc in taps]
  # Pad `grad` once so that every shifted view grad[i + dr, j + dc] (i < rows, j < cols) is a slice of it.
  before = (max(0, -min(dr for dr, _ in shifts)), max(0, -min(dc for _, dc in shifts)))
  after = (max(0, rows + max(dr for dr, _ in shifts) - grad.shape[1]),
           max(0, cols + max(dc for _, dc in shifts) - grad.shape[2]))
  padded = _held_padded(grad, ((before[0], after[0]), (before[1], after[1])))
  grad = lax.slice(padded, (0, before[0], before[1], 0), (grad.shape[0], before[0] + grad.shape[1],
                                                           before[1] + grad.shape[2], grad.shape[3]))

  def phase(taps) -> jax.Array:
    out = jnp.zeros((grad.shape[0], rows, cols, grad.shape[3]), grad.dtype)
    for a, b, dr, dc in taps:
      view = lax.slice(padded, (0, before[0] + dr, before[1] + dc, 0),
                       (grad.shape[0], before[0] + dr + rows, before[1] + dc + cols, grad.shape[3]))
      out = out + view * kernel[a, b, 0]
    return out

  if stride == 1:
    return phase(phase_taps[0, 0]), grad
  interleaved = jnp.stack([jnp.stack([phase(phase_taps[r, c]) for c in range(stride)], axis=3)
                           for r in range(stride)], axis=2)  # (N, rows, s, cols, s, C)
  grad_x = interleaved.reshape(grad.shape[0], rows * stride, cols * stride, grad.shape[3])
  return grad_x[:, :input_shape[1], :input_shape[2]], grad


def _phase_shifts(phase: int, pad_before: int, kernel: int, stride: int) -> list[tuple[int, int]]:
  """(tap, shift) for the taps that reach input positions stride * i + phase, from grad[i + shift]."""
  return [(tap, (phase + pad_before - tap) // stride) for tap in range(kernel)
          if (phase + pad_before - tap) % stride == 0]


def _add_each(a: list[jax.Array], b: list[jax.Array]) -> list[jax.Array]:
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


# A dense convolution with at most this many input channels (a stem on RGB or grayscale images) runs as a
# tap sum on CPU.
FEW_CHANNELS = 4


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def few_channel_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Dense convolution of an input with few channels as k*k*C_in broadcast products summed in one loop;
  kernel (k, k, C_in, C_out) as nn.Conv's.

  XLA:CPU runs a stem convolution (3x3, stride 2, 3 input channels) through YNNPACK slowly: at
  32x224x224x3 -> 32 channels, 63-90 ms against PyTorch's 21-25 ms; as this sum, which XLA fuses into one
  loop over the output vectorised along C_out, 26-28 ms (AMD EPYC; experiments/RESULTS.md, "CPU speed").
  The gradients are XLA's: its filter gradient is faster than this sum's (60 against 78-96 ms).
  """
  weights = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)  # (tap, c) rows, as the products below
  products = (view[..., c:c + 1].astype(jnp.float32)
              for view in _sliced_taps(x, kernel.shape[0], stride, padding) for c in range(x.shape[-1]))
  out = functools.reduce(lambda total, term: total + term, (p * w for p, w in zip(products, weights)))
  return out.astype(x.dtype)


def dense_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """Dense convolution through XLA's (the reference)."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _few_channel_taps_fwd(x, kernel, stride, padding):
  return few_channel_taps(x, kernel, stride, padding), (x, kernel)


def _few_channel_taps_bwd(stride, padding, residuals, grad):
  _, vjp = jax.vjp(lambda x, kernel: dense_xla(x, kernel, stride, padding), *residuals)
  return vjp(grad)


few_channel_taps.defvjp(_few_channel_taps_fwd, _few_channel_taps_bwd)


def dense_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding, impl: str) -> jax.Array:
  """Dense k x k convolution of NHWC `x` with a (k, k, C_in, C_out) kernel by the named implementation
  ('fast' is the tap sum for inputs of at most FEW_CHANNELS channels, XLA's otherwise)."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'unknown convolution implementation {impl!r}; choose one of {IMPLEMENTATIONS}')
  if impl == 'fast' and x.shape[-1] <= FEW_CHANNELS:
    return few_channel_taps(x, kernel, stride, padding)
  return dense_xla(x, kernel, stride, padding)


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
    return dense_xla(x, kernel, 1, 'VALID')
  raise ValueError(f'unknown convolution implementation {impl!r}; choose one of {IMPLEMENTATIONS}')
