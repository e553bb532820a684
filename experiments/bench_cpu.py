"""CPU speed of lightcls models against the same timm architectures in PyTorch (CPU wheel), in one run.

For each model and setting: the train step (the real `steps.train_step`: augmentation, loss, gradients,
AdamW update) and the forward pass (eval mode), median seconds after warm-up, and the compile time of each
jit function; PyTorch gets the same thread count (--threads, default all cores), channels_last, AdamW.

  python experiments/bench_cpu.py                                  # the issue-11 table: 6 models, 2 settings
  python experiments/bench_cpu.py --models=mobilenet_v3_large --settings=224x32 --conv_impl=xla
  python experiments/bench_cpu.py --cpu_codegen=fast_steps         # XLA's newer kernel emitters

Settings are SIZExBATCH: 224x32 (ImageNet-sized) and 32x128 (CIFAR-sized), the same architecture on both
sides (--small_input times lightcls' stride-8 variants instead, which timm lacks). Ratios are PyTorch time /
lightcls time: above 1 means lightcls is faster.
"""
import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_train  # noqa: E402  (the timm model names and the shared train-step setup)
from lightcls import cli, models, steps  # noqa: E402
from tests import reference  # noqa: E402

MODELS = 'ghostnet,efficientnet_b0,mobilenet_v3_large,mobilenet_v3_small,mobilenet_v2,mobilenet_v1'


def compiled(jitted, *args):
  """The compiled executable of a jit function for `args`, and the seconds compiling took."""
  start = time.perf_counter()
  executable = jitted.lower(*args).compile()
  return executable, time.perf_counter() - start


def lightcls_times(name: str, size: int, batch: int, repeats: int, conv_impl: str, small_input: bool,
                   cpu_codegen: str) -> dict[str, float]:
  model, state, (batch_data,), train_step = bench_train.train_setup(
      name, size, batch, small_input=small_input, conv_impl=conv_impl, num_batches=1, cpu_codegen=cpu_codegen)
  mean, std = bench_train.MEAN, bench_train.STD
  step, train_compile = compiled(train_step, state, batch_data, 1e-3)
  holder = [state]

  def one_step():
    holder[0], metrics = step(holder[0], batch_data, 1e-3)
    jax.block_until_ready(metrics)
  train_s = bench_train.median_seconds(one_step, repeats)

  variables = {'params': holder[0].params, 'batch_stats': holder[0].batch_stats}
  forward, forward_compile = compiled(
      jax.jit(lambda v, x: model.apply(v, steps.normalized(x, mean, std), train=False),
              compiler_options=models.compiler_options(cpu_codegen)), variables, batch_data['image'])
  forward_s = bench_train.median_seconds(
      lambda: jax.block_until_ready(forward(variables, batch_data['image'])), repeats)
  return dict(train=train_s, forward=forward_s, train_compile=train_compile, forward_compile=forward_compile)


def torch_times(name: str, size: int, batch: int, repeats: int) -> dict[str, float]:
  import torch
  timm = reference.timm()  # timm without torchvision, which has no CPU build
  torch.manual_seed(0)
  model = timm.create_model(bench_train.TIMM_NAMES[name], num_classes=1000).to(memory_format=torch.channels_last)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
  mean = torch.tensor(bench_train.MEAN).view(1, 3, 1, 1) * 255
  std = torch.tensor(bench_train.STD).view(1, 3, 1, 1) * 255
  images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
  labels = torch.randint(0, 1000, (batch,))

  def inputs():
    flip = torch.rand(batch, 1, 1, 1) < 0.5  # the flip lightcls does on the device; its crop is cheaper
    x = torch.where(flip, images.flip(3), images).float()
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

  def train_step():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(inputs()), labels).backward()
    optimizer.step()

  def forward():
    model.eval()
    with torch.inference_mode():
      model(((images.float() - mean) / std).contiguous(memory_format=torch.channels_last))
  return dict(train=bench_train.median_seconds(train_step, repeats),
              forward=bench_train.median_seconds(forward, repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=MODELS)
  parser.add_argument('--settings', default='224x32,32x128', help='comma-separated SIZExBATCH')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--conv_impl', default='auto', help="lightcls model.conv_impl: auto | fast | xla")
  parser.add_argument('--cpu_codegen', default='fast_compile', choices=models.CPU_CODEGENS,
                      help='lightcls model.cpu_codegen: fast_compile | fast_steps')
  parser.add_argument('--small_input', action='store_true',
                      help='lightcls small-input variants (stride 8; timm has no such variant, so not a pair)')
  parser.add_argument('--default_malloc', action='store_true',
                      help="glibc's malloc as it comes, not as lightcls commands set it (cli.keep_freed_host_memory)")
  args = parser.parse_args()
  kept = not args.default_malloc and cli.keep_freed_host_memory()  # before JAX and PyTorch start threads
  import torch
  reference.timm()
  torch.set_num_threads(args.threads)
  print(f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} ({args.threads} threads), '
        f'{os.cpu_count()} cores; conv_impl={args.conv_impl}, cpu_codegen={args.cpu_codegen}; malloc: '
        f'{os.environ.get("LD_PRELOAD") or ("glibc, freed memory kept" if kept else "glibc")}', flush=True)
  rows = []
  for setting in args.settings.split(','):
    size, batch = map(int, setting.split('x'))
    for name in args.models.split(','):
      ours = lightcls_times(name, size, batch, args.repeats, args.conv_impl, args.small_input, args.cpu_codegen)
      theirs = torch_times(name, size, batch, args.repeats)
      rows.append((name, setting, ours, theirs))
      print(f'{name} {setting}: lightcls {ours}; torch {theirs}', flush=True)
  print('\nmodel | px x batch | train step s: lightcls / torch = ratio | forward s: lightcls / torch = ratio | '
        'compile s: train, forward')
  print('---|---|---|---|---')
  for name, setting, ours, theirs in rows:
    print(f"{name} | {setting} | {ours['train']:.3f} / {theirs['train']:.3f} = "
          f"{theirs['train'] / ours['train']:.2f} | {ours['forward']:.3f} / {theirs['forward']:.3f} = "
          f"{theirs['forward'] / ours['forward']:.2f} | {ours['train_compile']:.0f}, {ours['forward_compile']:.0f}")


if __name__ == '__main__':
  main()
