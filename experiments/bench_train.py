"""Training throughput of lightcls models against the same timm architectures in PyTorch, same run, same device.

lightcls: the real `steps.train_step` (on-device random crop + flip, label-smoothing cross-entropy, AdamW,
BatchNorm over the batch), jit-compiled with the state donated, fed uint8 images already on the device.
PyTorch: timm's model in channels_last with bf16 autocast (when --dtype=bfloat16), AdamW, the same loss,
flip on the device; eager, and with torch.compile when --torch_compile. Prints images/s (steady state,
after compiling), the ratio lightcls / best PyTorch, peak device memory, compile time, and the achieved
FLOP/s of our step from XLA's cost analysis.

  python experiments/bench_train.py --models=ghostnet,efficientnet_b0,mobilenet_v3_large,mobilenet_v2 \\
      --size=224 --batch=256 --dtype=bfloat16 --torch_compile
"""
import argparse
import statistics
import time

import jax
import numpy as np

from configs import default
from lightcls import models, optim, state as state_lib, steps

TIMM_NAMES = {'ghostnet': 'ghostnet_100', 'efficientnet_b0': 'efficientnet_b0',
              'mobilenet_v3_large': 'mobilenetv3_large_100', 'mobilenet_v3_small': 'mobilenetv3_small_100',
              'mobilenet_v2': 'mobilenetv2_100', 'mobilenet_v1': 'mobilenetv1_100'}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
  """Median wall time of `fn()` over `repeats` calls after `warmup` calls. One is not enough on CPU: the
  heap grows over the first one to three train steps at 224 px (500,000 page faults each, 3.5 s against
  0.9 s for MobileNetV3-Large), and a median of 3 after a single warm-up call could land on them."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def train_setup(name: str, size: int, batch: int, dtype: str = 'float32', small_input: bool = False,
                conv_impl: str = 'auto', num_batches: int = 4, cpu_codegen: str = 'fast_compile'):
  """A lightcls model's real train step (crop + flip on the device, label-smoothed cross-entropy, AdamW),
  jit-compiled with the state donated; the model, its initial state and random uint8 batches on the device."""
  config = default.get_config()
  config.model.update(name=name, dtype=dtype, small_input=small_input, conv_impl=conv_impl)
  config.augment.order = ('crop', 'hflip')
  config.augment.crop.padding = size // 8
  config.loss.label_smoothing = 0.1
  config.data.mean, config.data.std = MEAN, STD
  model = models.create_model(config.model, 1000)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer), (size, size, 3), 0,
                                       sharding)
  rng = np.random.default_rng(0)
  batches = [{'image': jax.device_put(rng.integers(0, 256, (batch, size, size, 3), np.uint8)),
              'label': jax.device_put(rng.integers(0, 1000, (batch,), np.int32))} for _ in range(num_batches)]
  step = jax.jit(steps.configured_train_step(config, 1000), donate_argnums=0,
                 compiler_options=models.compiler_options(cpu_codegen))
  return model, state, batches, step


def bench_lightcls(name: str, size: int, batch: int, dtype: str, steps_timed: int, small_input: bool):
  _, state, batches, step = train_setup(name, size, batch, dtype, small_input)
  start = time.perf_counter()
  compiled = step.lower(state, batches[0], 1e-3).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', float('nan'))
  for i in range(3):
    state, metrics = compiled(state, batches[i % 4], 1e-3)
  jax.block_until_ready(state)
  times = []
  for i in range(steps_timed):
    begin = time.perf_counter()
    state, metrics = compiled(state, batches[i % 4], 1e-3)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - begin)
  step_s = statistics.median(times)
  stats = jax.devices()[0].memory_stats() or {}
  return dict(images_s=batch / step_s, step_ms=1e3 * step_s, compile_s=compile_s, tflops=flops / step_s / 1e12,
              peak_gb=stats.get('peak_bytes_in_use', float('nan')) / 1e9)


def bench_timm(name: str, size: int, batch: int, dtype: str, steps_timed: int, compile_model: bool):
  import torch
  import timm
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  model = timm.create_model(TIMM_NAMES[name], num_classes=1000).to(device).to(memory_format=torch.channels_last)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
  mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
  std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
  images = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device) for _ in range(4)]
  labels = [torch.randint(0, 1000, (batch,), device=device) for _ in range(4)]
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == 'bfloat16')

  def forward_backward(x_uint8, y):
    flip = torch.rand(x_uint8.shape[0], 1, 1, 1, device=device) < 0.5
    x = torch.where(flip, x_uint8.flip(3), x_uint8).float()
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    with autocast:
      loss = loss_fn(model(x), y)
    loss.backward()
    return loss

  run = torch.compile(forward_backward) if compile_model else forward_backward

  def train_step(i):
    optimizer.zero_grad(set_to_none=True)
    run(images[i % 4], labels[i % 4])
    optimizer.step()

  cuda = device == 'cuda'
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  start = time.perf_counter()
  for i in range(3):
    train_step(i)
  sync()
  compile_s = time.perf_counter() - start
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  times = []
  for i in range(steps_timed):
    begin = time.perf_counter()
    train_step(i)
    sync()
    times.append(time.perf_counter() - begin)
  step_s = statistics.median(times)
  return dict(images_s=batch / step_s, step_ms=1e3 * step_s, compile_s=compile_s,
              peak_gb=torch.cuda.max_memory_allocated() / 1e9 if cuda else float('nan'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='ghostnet,efficientnet_b0,mobilenet_v3_large,mobilenet_v2')
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--dtype', default='bfloat16', choices=('float32', 'bfloat16'))
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--small_input', action='store_true', help='lightcls small-input variants (32 px)')
  parser.add_argument('--torch_compile', action='store_true')
  parser.add_argument('--time_budget', type=float, default=480, help='seconds; later peers are skipped')
  args = parser.parse_args()
  started = time.perf_counter()
  import torch
  print(f'device: {jax.devices()[0].device_kind}; jax {jax.__version__}; torch {torch.__version__}; '
        f'{args.size}px batch {args.batch} {args.dtype}', flush=True)
  rows = []
  for name in args.models.split(','):
    ours = bench_lightcls(name, args.size, args.batch, args.dtype, args.steps, args.small_input)
    print(f'{name} lightcls: {ours}', flush=True)
    eager = bench_timm(name, args.size, args.batch, args.dtype, args.steps, False)
    print(f'{name} timm eager: {eager}', flush=True)
    compiled = None
    if args.torch_compile and time.perf_counter() - started < args.time_budget:
      compiled = bench_timm(name, args.size, args.batch, args.dtype, args.steps, True)
      print(f'{name} timm compiled: {compiled}', flush=True)
    rows.append((name, ours, eager, compiled))
  print('\nmodel | lightcls img/s | timm eager img/s | timm compiled img/s | ratio vs best timm | '
        'lightcls TFLOP/s | peak GB lightcls / timm | compile s lightcls / timm.compile')
  for name, ours, eager, compiled in rows:
    best = max(eager['images_s'], compiled['images_s'] if compiled else 0)
    print(f"{name} | {ours['images_s']:.0f} | {eager['images_s']:.0f} | "
          f"{compiled['images_s'] if compiled else float('nan'):.0f} | {ours['images_s'] / best:.2f} | "
          f"{ours['tflops']:.1f} | {ours['peak_gb']:.1f} / {eager['peak_gb']:.1f} | "
          f"{ours['compile_s']:.0f} / {compiled['compile_s'] if compiled else float('nan'):.0f}")


if __name__ == '__main__':
  main()
