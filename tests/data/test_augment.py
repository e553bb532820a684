import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lightcls.data import augment


def config(crop_padding=0, hflip=0.0):
  return ml_collections.ConfigDict({'crop_padding': crop_padding, 'hflip': hflip})


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
  image = jnp.arange(1, 1 + 6 * 5 * 2, dtype=jnp.uint8).reshape(6, 5, 2)
  padded = np.pad(np.asarray(image), ((3, 3), (3, 3), (0, 0)))
  windows = {padded[t:t + 6, l:l + 5].tobytes() for t in range(7) for l in range(7)}
  crops = [np.asarray(augment.random_crop(jax.random.PRNGKey(i), image, 3)) for i in range(40)]
  assert all(c.shape == (6, 5, 2) and c.tobytes() in windows for c in crops)
  assert len({c.tobytes() for c in crops}) > 10  # offsets really vary


def test_hflip_mirrors_columns_with_the_given_probability():
  image = jnp.arange(12, dtype=jnp.uint8).reshape(1, 4, 3, 1)[0]
  flips = [augment.random_hflip(jax.random.PRNGKey(i), image, 0.5) for i in range(400)]
  flipped = [bool(np.array_equal(f, image[:, ::-1])) for f in flips]
  assert all(f or np.array_equal(g, image) for f, g in zip(flipped, flips))
  assert 0.4 < np.mean(flipped) < 0.6


def test_each_example_gets_its_own_randomness():
  images = jnp.tile(jnp.arange(64, dtype=jnp.uint8).reshape(1, 8, 8, 1), (16, 1, 1, 1))
  out = augment.augment(jax.random.PRNGKey(0), images, config(crop_padding=2))
  assert len({np.asarray(x).tobytes() for x in out}) > 4


def test_disabled_augmentation_is_the_identity():
  images = jax.random.randint(jax.random.PRNGKey(1), (4, 8, 8, 3), 0, 256).astype(jnp.uint8)
  np.testing.assert_array_equal(augment.augment(jax.random.PRNGKey(0), images, config()), images)
