import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls import models
from lightcls.models import convolutions

# Every kernel size with both strides, both padding flavours and odd and even sizes, in 8 cases.
CASES = [(3, 1, 'symmetric', 9), (3, 2, 'same', 10), (3, 2, 'symmetric', 10), (5, 1, 'same', 10),
         (5, 2, 'symmetric', 9), (5, 2, 'same', 9), (7, 1, 'symmetric', 10), (7, 2, 'same', 9)]


@pytest.mark.parametrize('kernel,stride,mode,size', CASES)
def test_tap_sum_equals_xla_depthwise_convolution_with_both_gradients(kernel, stride, mode, size):
  keys = jax.random.split(jax.random.PRNGKey(kernel * 100 + stride * 10 + size), 3)
  x = jax.random.normal(keys[0], (2, size, size + 1, 6))
  w = jax.random.normal(keys[1], (kernel, kernel, 1, 6))
  padding = convolutions.explicit_padding(x.shape[1:3], kernel, stride, mode)

  @functools.partial(jax.jit, static_argnums=3)
  def outputs(x, w, g, impl):
    out, vjp = jax.vjp(lambda x, w: convolutions.depthwise_conv(x, w, stride, padding, impl), x, w)
    return (out, *vjp(g))

  out_shape = jax.eval_shape(lambda: convolutions.depthwise_xla(x, w, stride, padding)).shape
  g = jax.random.normal(keys[2], out_shape)
  for fast, reference in zip(outputs(x, w, g, 'fast'), outputs(x, w, g, 'xla')):
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5 * float(jnp.abs(reference).max()))


@pytest.mark.parametrize('kernel,stride,height,width', [(3, 2, 2, 2), (5, 1, 3, 4), (3, 1, 1, 5)])
def test_tap_sum_on_images_too_small_for_a_producer_written_pad_equals_xla(kernel, stride, height, width):
  # These images keep the barrier on the unpadded input (and on the unpadded output gradient).
  assert height * width < convolutions._PRODUCER_PAD_MIN_PIXELS
  keys = jax.random.split(jax.random.PRNGKey(kernel + height * width), 3)
  x = jax.random.normal(keys[0], (3, height, width, 5))
  w = jax.random.normal(keys[1], (kernel, kernel, 1, 5))
  padding = convolutions.explicit_padding(x.shape[1:3], kernel, stride, 'same')

  def outputs(impl):
    # The input comes from an activation, as in a model: its producer is what the barrier holds apart.
    out, vjp = jax.vjp(lambda x, w: convolutions.depthwise_conv(jax.nn.relu6(x), w, stride, padding, impl), x, w)
    return (out, *vjp(jax.random.normal(keys[2], out.shape)))

  for fast, reference in zip(jax.jit(lambda: outputs('fast'))(), jax.jit(lambda: outputs('xla'))()):
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5 * float(jnp.abs(reference).max()))


@pytest.mark.parametrize('height,spans', [(112, [(0, 112, 8)]), (14, [(0, 14, 7)]), (10, [(0, 10, 5)]),
                                          (17, [(0, 16, 8), (16, 17, 1)]), (11, [(0, 8, 8), (8, 11, 3)]),
                                          (3, [(0, 3, 3)]), (1, [(0, 1, 1)])])
def test_row_spans_tile_the_height_with_blocks_of_at_most_eight_rows(height, spans):
  assert convolutions._row_spans(height) == spans


# Output heights with one span of blocks (16, 7) and with a remainder (9 -> 8 + 1, 11 -> 8 + 3); 3x3 kernels
# sum all taps in one reduction, larger ones a kernel row per reduction.
@pytest.mark.parametrize('dtype,kernel,stride,height', [(jnp.float32, 3, 1, 16), (jnp.float32, 5, 2, 14),
                                                        (jnp.float32, 3, 1, 9), (jnp.float32, 7, 1, 11),
                                                        (jnp.bfloat16, 3, 2, 17), (jnp.bfloat16, 5, 1, 11)])
def test_filter_gradient_summed_in_row_blocks_equals_xla(dtype, kernel, stride, height):
  keys = jax.random.split(jax.random.PRNGKey(kernel * 100 + height), 3)
  x = jax.random.normal(keys[0], (2, height, 6, 40), dtype)
  w = jax.random.normal(keys[1], (kernel, kernel, 1, 40), dtype)
  padding = convolutions.explicit_padding(x.shape[1:3], kernel, stride, 'same')

  def outputs(impl):
    out, vjp = jax.vjp(lambda x, w: convolutions.depthwise_conv(x, w, stride, padding, impl), x, w)
    return (out, *vjp(jax.random.normal(keys[2], out.shape, dtype)))

  tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
  for fast, reference in zip(jax.jit(lambda: outputs('fast'))(), jax.jit(lambda: outputs('xla'))()):
    assert fast.shape == reference.shape and fast.dtype == reference.dtype
    reference = np.asarray(reference, np.float32)
    np.testing.assert_allclose(np.asarray(fast, np.float32), reference, rtol=0,
                               atol=tolerance * float(np.abs(reference).max()))


@pytest.mark.parametrize('kernel,stride,mode,size', CASES)
@pytest.mark.parametrize('channels', [1, 3])
def test_few_channel_tap_sum_equals_xla_dense_convolution_with_both_gradients(kernel, stride, mode, size, channels):
  keys = jax.random.split(jax.random.PRNGKey(kernel * 100 + stride * 10 + size + channels), 3)
  x = jax.random.normal(keys[0], (2, size, size + 1, channels))
  w = jax.random.normal(keys[1], (kernel, kernel, channels, 5))
  padding = convolutions.explicit_padding(x.shape[1:3], kernel, stride, mode)

  @functools.partial(jax.jit, static_argnums=3)
  def outputs(x, w, g, impl):
    out, vjp = jax.vjp(lambda x, w: convolutions.dense_conv(x, w, stride, padding, impl), x, w)
    return (out, *vjp(g))

  g = jax.random.normal(keys[2], jax.eval_shape(lambda: convolutions.dense_xla(x, w, stride, padding)).shape)
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(  # the forward pass is the tap sum, not XLA's conv
      lambda x: convolutions.dense_conv(x, w, stride, padding, 'fast'))(x))
  for fast, reference in zip(outputs(x, w, g, 'fast'), outputs(x, w, g, 'xla')):
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5 * float(jnp.abs(reference).max()))


def test_few_channel_tap_sum_in_bfloat16_accumulates_in_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 11, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 8))
  padding = convolutions.explicit_padding((11, 11), 3, 2, 'symmetric')
  want = convolutions.dense_xla(x, w, 2, padding)
  got = convolutions.few_channel_taps(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 2, padding)
  assert got.dtype == jnp.bfloat16
  # bf16 inputs (8-bit mantissas) and one rounding of the float32 sum: within a few bf16 steps of the output
  np.testing.assert_allclose(got.astype(jnp.float32), want, atol=0.03 * float(jnp.abs(want).max()))


def test_same_padding_equals_xla_same():
  x = jnp.ones((1, 9, 10, 2))
  w = jnp.ones((3, 3, 1, 2))
  for stride in (1, 2):
    ours = convolutions.depthwise_xla(x, w, stride, convolutions.explicit_padding((9, 10), 3, stride, 'same'))
    theirs = jax.lax.conv_general_dilated(x, w, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                          feature_group_count=2)
    np.testing.assert_array_equal(ours, theirs)


def test_pointwise_dot_equals_the_1x1_convolution():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 4, 3))
  np.testing.assert_allclose(convolutions.pointwise_conv(x, w, 'fast'), convolutions.pointwise_conv(x, w, 'xla'),
                             rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_and_float32_logits_close():
  from lightcls.models.ghostnet import GhostNet
  from lightcls.models.layers import LayerConfig
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  f32 = GhostNet(num_classes=10, width=0.5)
  bf16 = GhostNet(num_classes=10, width=0.5, layer=LayerConfig(dtype='bfloat16'))
  variables = jax.jit(f32.init, compiler_options=models.INIT_COMPILER_OPTIONS)(jax.random.PRNGKey(0), images)
  assert {leaf.dtype for leaf in jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.PRNGKey(0), images))} == {
      jnp.dtype(jnp.float32)}
  reference, logits = jax.jit(f32.apply)(variables, images), jax.jit(bf16.apply)(variables, images)
  assert logits.dtype == jnp.float32
  assert float(jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference)) < 3e-2


@pytest.mark.parametrize('kernel,stride,mode,size', [(3, 2, 'same', 10), (5, 1, 'symmetric', 9)])
def test_tap_sum_in_bfloat16_equals_xla_within_bfloat16_precision(kernel, stride, mode, size):
  keys = jax.random.split(jax.random.PRNGKey(7), 3)
  x = jax.random.normal(keys[0], (2, size, size, 8), jnp.bfloat16)
  w = jax.random.normal(keys[1], (kernel, kernel, 1, 8), jnp.bfloat16)
  padding = convolutions.explicit_padding(x.shape[1:3], kernel, stride, mode)

  def outputs(impl):
    out, vjp = jax.vjp(lambda x, w: convolutions.depthwise_conv(x, w, stride, padding, impl), x, w)
    return (out, *vjp(jax.random.normal(keys[2], out.shape, jnp.bfloat16)))

  for fast, reference in zip(jax.jit(lambda: outputs('fast'))(), jax.jit(lambda: outputs('xla'))()):
    assert fast.dtype == reference.dtype == jnp.bfloat16
    reference = np.asarray(reference, np.float32)
    # bfloat16 keeps 8 bits of mantissa: a few units of 2^-8 of the largest value, summed over k*k taps
    # (and, for the filter gradient, over 2*size*size positions, accumulated in float32 here).
    np.testing.assert_allclose(np.asarray(fast, np.float32), reference, rtol=0,
                               atol=3e-2 * float(np.abs(reference).max()))


def test_pointwise_dot_gradients_equal_the_1x1_convolution_gradients():
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(keys[0], (2, 5, 7, 4))
  w = jax.random.normal(keys[1], (1, 1, 4, 3))
  g = jax.random.normal(keys[2], (2, 5, 7, 3))

  def gradients(impl):
    return jax.vjp(lambda x, w: convolutions.pointwise_conv(x, w, impl), x, w)[1](g)

  for fast, reference in zip(jax.jit(lambda: gradients('fast'))(), jax.jit(lambda: gradients('xla'))()):
    assert fast.shape == reference.shape
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)


def test_compiler_options_keep_the_barrier_that_stops_recomputing_a_tap_sums_input():
  x = jnp.ones((1, 6, 6, 2))
  w = jnp.ones((3, 3, 1, 2))

  def depthwise_of_relu(x, w):  # the producer XLA would otherwise fuse into the tap sum, once per tap
    return convolutions.depthwise_conv(jax.nn.relu(x), w, 1, ((1, 1), (1, 1)), 'fast')

  kept = jax.jit(depthwise_of_relu, compiler_options=convolutions.COMPILER_OPTIONS).lower(x, w).compile()
  dropped = jax.jit(depthwise_of_relu).lower(x, w).compile()
  assert 'opt-barrier' in kept.as_text() and 'opt-barrier' not in dropped.as_text()
  np.testing.assert_array_equal(kept(x, w), dropped(x, w))
