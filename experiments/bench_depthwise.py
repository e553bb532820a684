"""Depthwise 3x3/5x5 convolution, forward and forward+backward: XLA's grouped conv vs the tap sum vs PyTorch.

Times each formulation of `lightcls.models.convolutions` on the layer shapes of EfficientNet-B0 /
MobileNetV3 (224 px, and the 32 px small-input variants), checks each against XLA's conv on the same
random inputs (relative error, input and filter gradients included), and, when PyTorch is importable,
times `F.conv2d(groups=C)` on the same shapes in channels_last (cuDNN on GPU, oneDNN on CPU) in the same
run. Prints one table: milliseconds (median), the ratio PyTorch / ours for the best of ours, and the
memory-bandwidth floor of each shape (bytes that must move / measured copy bandwidth).

  python experiments/bench_depthwise.py --preset=gpu      # on a GPU (batch 256 / 512)
  python experiments/bench_depthwise.py --preset=cpu      # on this CPU (batch 8 / 32), 2 threads for PyTorch
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lightcls.models import convolutions

# (batch, height, width, channels, kernel, stride): EfficientNet-B0 depthwise layers at 224 px, then the
# small-input (32 px) variant's. The CPU preset uses the same layers at smaller batches.
LAYERS = [
    (112, 32, 3, 1), (112, 96, 3, 2), (56, 144, 3, 1), (56, 144, 5, 2), (28, 240, 5, 1),
    (14, 480, 3, 1), (14, 672, 5, 1), (7, 1152, 5, 1),
]
SMALL_LAYERS = [(32, 96, 3, 1), (16, 240, 5, 1), (8, 672, 5, 1)]
PRESETS = {'gpu': (256, 512), 'cpu': (8, 32)}


def shapes(preset: str):
  large, small = PRESETS[preset]
  return ([(large, s, s, c, k, st) for s, c, k, st in LAYERS]
          + [(small, s, s, c, k, st) for s, c, k, st in SMALL_LAYERS])


def median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def jax_functions(impl: str, stride: int, padding):
  def forward(x, w):
    return convolutions.depthwise_conv(x, w, stride, padding, impl)

  def forward_backward(x, w, g):
    out, vjp = jax.vjp(forward, x, w)
    return out, *vjp(g)

  return jax.jit(forward), jax.jit(forward_backward)


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def copy_bandwidth() -> float:
  """Bytes per second of a large elementwise pass (read + write), the memory floor's denominator."""
  x = jnp.ones((64 * 1024 * 1024,), jnp.float32)
  ms = median_ms(jax.jit(lambda v: v * 1.0001), x, repeats=10)
  return 2 * x.nbytes / (ms / 1e3)


def bench_jax(shape, dtype, repeats):
  n, h, w, c, k, stride = shape
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  padding = convolutions.explicit_padding((h, w), k, stride, 'symmetric')
  x = jax.random.normal(keys[0], (n, h, w, c), dtype)
  kernel = jax.random.normal(keys[1], (k, k, 1, c), dtype) / k
  fwd_ref, bwd_ref = jax_functions('xla', stride, padding)
  out = fwd_ref(x, kernel)
  g = jax.random.normal(keys[2], out.shape, dtype)
  reference = bwd_ref(x, kernel, g)
  row = {}
  for impl in convolutions.IMPLEMENTATIONS:
    fwd, bwd = jax_functions(impl, stride, padding)
    result = bwd(x, kernel, g)
    row[impl] = (median_ms(fwd, x, kernel, repeats=repeats), median_ms(bwd, x, kernel, g, repeats=repeats),
                 max(relative_error(a, b) for a, b in zip(result, reference)))
  return row, x.nbytes, out.nbytes


def bench_torch(shape, dtype, repeats):
  import torch
  n, h, w, c, k, stride = shape
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  tdtype = {jnp.float32: torch.float32, jnp.bfloat16: torch.bfloat16}[dtype]
  x = torch.randn(n, c, h, w, device=device, dtype=tdtype).to(memory_format=torch.channels_last)
  weight = torch.randn(c, 1, k, k, device=device, dtype=tdtype) / k
  x.requires_grad_(True)
  weight.requires_grad_(True)
  pad = ((stride - 1) + (k - 1)) // 2
  conv = lambda: torch.nn.functional.conv2d(x, weight, stride=stride, padding=pad, groups=c)
  g = torch.randn_like(conv())

  def forward():
    with torch.no_grad():
      conv()

  def forward_backward():
    torch.autograd.grad(conv(), (x, weight), g)

  def timed(fn):
    for _ in range(2):
      fn()
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    sync()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      sync()
      times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)

  return timed(forward), timed(forward_backward)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  try:
    import torch
    torch.set_num_threads(2) if args.preset == 'cpu' else None
  except ImportError:
    torch = None
  bandwidth = copy_bandwidth()
  print(f'device: {jax.devices()[0].device_kind}; jax {jax.__version__}; '
        f'torch {torch.__version__ if torch else "-"}; copy bandwidth {bandwidth / 1e9:.0f} GB/s')
  header = ('shape NHWC k s', 'dtype', 'xla fwd', 'xla f+b', 'fast fwd', 'fast f+b', 'torch fwd', 'torch f+b',
            'floor f/f+b', 'torch/best f+b', 'fast err')
  print(' | '.join(header))
  for shape in shapes(args.preset):
    for dtype_name in args.dtypes.split(','):
      dtype = getattr(jnp, dtype_name)
      row, x_bytes, out_bytes = bench_jax(shape, dtype, args.repeats)
      t_fwd, t_bwd = bench_torch(shape, dtype, args.repeats) if torch else (float('nan'),) * 2
      # Forward: read x, write out. Backward adds: read x and g, write dx (the filter gradient is tiny).
      floor_fwd = 1e3 * (x_bytes + out_bytes) / bandwidth
      floor_bwd = floor_fwd + 1e3 * (2 * x_bytes + out_bytes) / bandwidth
      best = min(row['xla'][1], row['fast'][1])
      n, h, w, c, k, s = shape
      print(' | '.join([f'{n}x{h}x{w}x{c} k{k} s{s}', dtype_name,
                        f"{row['xla'][0]:.2f}", f"{row['xla'][1]:.2f}", f"{row['fast'][0]:.2f}",
                        f"{row['fast'][1]:.2f}", f'{t_fwd:.2f}', f'{t_bwd:.2f}',
                        f'{floor_fwd:.2f}/{floor_bwd:.2f}', f'{t_bwd / best:.2f}', f"{row['fast'][2]:.1e}"]),
            flush=True)


if __name__ == '__main__':
  main()
