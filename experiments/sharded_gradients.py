"""Checks one real GhostNet train step on this process's devices against a float64 one-device reference.

The quickstart config runs `steps.train_step` once (random crops inside the compiled step, as in training)
with SGD, learning rate 1, no momentum or weight decay and no dropout, so `params - new_params` is the
gradient the step used. The reference recomputes it in float64 from the same augmented images. Prints
the relative error of the stem and last-block kernel gradients (float32 noise is ~1e-5).

At initialisation every BatchNorm bias is 0, so a channel that is constant over the batch (common on the
1x1 maps of the last blocks at 32 px) lands exactly on ReLU's kink, where the gradient is whatever
rounding decides. --offset_bn_bias moves every BatchNorm bias off 0 to tell such ties from real errors.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/sharded_gradients.py --batch=8
"""
import argparse
import dataclasses

import jax
import numpy as np

jax.config.update('jax_enable_x64', True)  # for the reference; the checked step stays float32
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from configs import quickstart  # noqa: E402
from lightcls import losses, models, optim, state as state_lib, steps, train  # noqa: E402
from lightcls.data import augment, pipeline, sources  # noqa: E402

KERNELS = {'stem': ('stem', 'conv', 'kernel'),
           'block15': ('block15', 'ghost1', 'primary', 'conv', 'kernel')}


def offset_bn_biases(params, scale: float):
  """Every BatchNorm bias plus N(0, scale^2) noise (fixed seed)."""
  rng = np.random.default_rng(0)

  def offset(path, x):
    is_bn_bias = path[-2].key in ('bn', 'head_bn') and path[-1].key == 'bias'
    return x + scale * rng.standard_normal(x.shape).astype(x.dtype) if is_bn_bias else x

  return jax.tree_util.tree_map_with_path(offset, params)


def step_and_reference_gradients(batch_size: int, crop_padding: int, bias_offset: float):
  config = quickstart.get_config()
  config.augment.crop.padding = crop_padding
  config.augment.order = ('crop',) if crop_padding else ()
  config.model.dropout = 0.0
  config.optimizer.update(name='sgd', lr=1.0, momentum=0.0, weight_decay=0.0)
  data, _ = pipeline.prepared(sources.load(config.data), config.data)
  mesh = train.data_mesh()
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  model = models.create_model(config.model, data.num_classes)
  state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer),
                                       data.train.images.shape[1:], config.seed, replicated)
  if bias_offset:
    state = state.replace(params=jax.device_put(offset_bn_biases(state.params, bias_offset), replicated))
  params = jax.tree.map(np.asarray, state.params)
  batch_stats, rng = jax.tree.map(np.asarray, state.batch_stats), np.asarray(state.rng)
  batch = next(train.global_batches(pipeline.train_batches(data.train, batch_size, 0, 0), sharded))
  train_step = jax.jit(steps.configured_train_step(config, data.num_classes))
  new_state, _ = train_step(state, batch, 1.0)
  used = jax.tree.map(lambda p, q: p - np.asarray(q, np.float64), params, new_state.params)

  # The same augmented images (the augmentation itself is identical on any device count).
  augment_rng, _ = jax.random.split(jax.random.fold_in(rng, 0))
  pixels, _ = augment.training_batch(augment_rng, np.asarray(batch['image']), config.augment,
                                     config.data.mean, config.data.std)
  images = steps.normalized(pixels, config.data.mean, config.data.std)
  model64 = model.clone(layer=dataclasses.replace(model.layer, dtype='float64'))
  to64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)

  def loss(p):
    logits, _ = model64.apply({'params': p, 'batch_stats': to64(batch_stats)}, to64(images), train=True,
                              mutable=['batch_stats'])
    return losses.create_loss(config.loss)(logits, np.asarray(batch['label'])).mean()

  return used, jax.jit(jax.grad(loss))(to64(params))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--crop_padding', type=int, default=4, help='random crop inside the step (0: none)')
  parser.add_argument('--offset_bn_bias', type=float, default=0.0, help='std of noise added to BN biases')
  args = parser.parse_args()
  used, reference = step_and_reference_gradients(args.batch, args.crop_padding, args.offset_bn_bias)
  print(f'jax {jax.__version__}, {jax.device_count()} device(s), global batch {args.batch} '
        f'({args.batch // jax.device_count()} per device), crop_padding {args.crop_padding}, '
        f'BN bias offset {args.offset_bn_bias}')
  for name, path in KERNELS.items():
    got, want = used, reference
    for key in path:
      got, want = got[key], want[key]
    error = np.linalg.norm(got - np.asarray(want)) / np.linalg.norm(np.asarray(want))
    print(f'  {name:8s} kernel gradient of the train step, relative error vs float64: {error:.1e}')


if __name__ == '__main__':
  main()
