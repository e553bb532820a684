"""Random augmentation on the device, inside the compiled train step (per-example keys, vmapped).

Parameter names follow torchvision's transforms so the seed studies' settings carry over:
`crop_padding` is RandomCrop(size, padding=p) with zero fill; `hflip` is RandomHorizontalFlip(p).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections


def random_crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
  """Pads `padding` zero pixels on every side and crops the original size at a uniform random offset."""
  height, width, channels = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def random_hflip(key: jax.Array, image: jax.Array, probability: float) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key, probability), image[:, ::-1], image)


def augment_image(key: jax.Array, image: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  crop_key, flip_key = jax.random.split(key)
  if config.crop_padding:
    image = random_crop(crop_key, image, config.crop_padding)
  if config.hflip:
    image = random_hflip(flip_key, image, config.hflip)
  return image


def augment(key: jax.Array, images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Augments a batch (N, H, W, C) with an independent key per example (a `config.augment` section)."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(functools.partial(augment_image, config=config))(keys, images)
