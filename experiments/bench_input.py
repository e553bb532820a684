"""Input pipeline throughput: host decode + resize of Stanford-Cars-sized JPEGs, cached epochs, on-device
augmentation, and the augmentation's share of a GhostNet train step at the same batch and resolution.

  python experiments/bench_input.py                       # 224 px, batch 32, seed 000's augmentation
  python experiments/bench_input.py --size=224 --batch=256 --steps=20   # on a GPU

The JPEGs are generated (smooth random colour fields with edges, about 700x480 like the Cars photos, quality
90) so the decode cost is realistic without the dataset. Targets (issue 4): cached epochs at least 10x faster
than the first (decoding) epoch; augmentation at most 10% of the train step on a GPU.
"""
import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (median_seconds)
from configs import default  # noqa: E402
from lightcls import models, optim, state as state_lib, steps  # noqa: E402
from lightcls.data import augment, pipeline  # noqa: E402
from lightcls.data.dataset import Record, Records  # noqa: E402

SEED_000_AUGMENT = {'order': ('hflip', 'affine', 'color_jitter'),
                    'affine': dict(degrees=25.0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=8.0),
                    'color_jitter': dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)}


def car_sized_jpegs(directory: str, count: int) -> list[str]:
  """`count` JPEG files of about 700x480 with smooth gradients and sharp edges (like photos, unlike noise)."""
  rng = np.random.default_rng(0)
  paths = []
  for i in range(count):
    height, width = rng.integers(420, 540), rng.integers(640, 760)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)]
    image = (np.stack(channels, -1) * 100 + 128)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + height // 3, left:left + width // 3] = rng.uniform(0, 255, 3)  # an object with edges
    path = os.path.join(directory, f'{i:05d}.jpg')
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    paths.append(path)
  return paths


def decode_and_cached_epochs(paths: list[str], size: int, batch: int) -> tuple[float, float]:
  """images/s of the first epoch (decode + resize into the cache) and of a cached epoch (shuffle, gather)."""
  records = Records.of([Record(p, i % 10, p) for i, p in enumerate(paths)])
  start = time.perf_counter()
  split, _ = pipeline.decoded(records, pipeline.Preprocess(size), num_classes=10, what='bench')
  first = len(paths) / (time.perf_counter() - start)
  epochs = iter(range(10**6))
  seconds = bench_train.median_seconds(
      lambda: sum(b['image'].shape[0] for b in pipeline.train_batches(split, batch, 0, next(epochs))), 5)
  return first, (len(paths) // batch * batch) / seconds


def augmentation_and_step(size: int, batch: int, repeats: int, conv_impl: str) -> dict[str, float]:
  """Seconds per call of the augmentation alone and of the GhostNet train step with and without it."""
  config = default.get_config()
  config.augment.update(SEED_000_AUGMENT)
  config.model.conv_impl = conv_impl
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
  labels = jnp.asarray(np.arange(batch) % 10, jnp.int32)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  augment_fn = jax.jit(lambda key, x: augment.training_batch(key, x, config.augment, mean, std))
  keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))
  result = {'augment': bench_train.median_seconds(
      lambda: jax.block_until_ready(augment_fn(next(keys), images)), repeats)}

  model = models.create_model(config.model, 10)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for name, order in (('step', config.augment.order), ('step_without_augment', ())):
    step_config = config.copy_and_resolve_references()
    step_config.augment.order = order
    state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer), (size, size, 3), 0,
                                         device)
    step = jax.jit(steps.configured_train_step(step_config, 10), donate_argnums=0,
                   compiler_options=models.compiler_options(config.model.cpu_codegen))
    start = time.perf_counter()
    state, _ = step(state, {'image': images, 'label': labels}, 1e-3)
    jax.block_until_ready(state)
    print(f'  compiled the train step ({name}) in {time.perf_counter() - start:.1f} s')
    holder = [state]

    def one_step():
      holder[0], metrics = step(holder[0], {'image': images, 'label': labels}, 1e-3)
      jax.block_until_ready(metrics)
    result[name] = bench_train.median_seconds(one_step, repeats)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--files', type=int, default=256, help='generated JPEGs')
  parser.add_argument('--steps', type=int, default=5, help='timed repeats of each device measurement')
  parser.add_argument('--conv_impl', default='auto', help='model.conv_impl of the GhostNet step')
  args = parser.parse_args()
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} host cores')
  with tempfile.TemporaryDirectory() as directory:
    paths = car_sized_jpegs(directory, args.files)
    first, cached = decode_and_cached_epochs(paths, args.size, args.batch)
  print(f'host: first epoch (decode + resize to {args.size}) {first:,.0f} images/s; cached epochs '
        f'{cached:,.0f} images/s = {cached / first:,.0f}x (target >= 10x)')
  times = augmentation_and_step(args.size, args.batch, args.steps, args.conv_impl)
  share = (times['step'] - times['step_without_augment']) / times['step']
  print(f'device: augmentation alone {args.batch / times["augment"]:,.0f} images/s '
        f'({1e3 * times["augment"]:.1f} ms per batch of {args.batch} at {args.size} px)')
  print(f'GhostNet train step: {1e3 * times["step"]:.1f} ms with augmentation, '
        f'{1e3 * times["step_without_augment"]:.1f} ms without; augmentation = {100 * share:.1f}% of the step '
        f'(alone: {100 * times["augment"] / times["step"]:.1f}%; target <= 10% on a GPU)')


if __name__ == '__main__':
  main()
