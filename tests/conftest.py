"""Shared test setup: a persistent XLA compilation cache, so programs compiled once (in this process or a
subprocess) are reused by every later test and run."""
import os
import pathlib

CACHE_DIR = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                                  str(pathlib.Path.home() / '.cache' / 'lightcls' / 'jax-tests'))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The Keras references run on JAX; whichever test imports Keras first (TensorFlow may, through tfds),
# it must get that backend.
os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402  (after the environment above)

jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
