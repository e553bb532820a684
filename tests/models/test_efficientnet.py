import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls.models.efficientnet import VARIANTS, EfficientNet, MBConv, stage_repeats
from lightcls.models.layers import DropPath, LayerConfig


def count_params(model, size=32, channels=3):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))
  return sum(x.size for x in jax.tree.leaves(variables['params']))


# Trainable parameter counts at 1000 and 196 classes (REFERENCE.md; Keras EfficientNetB0..B7 and timm agree).
REFERENCE_COUNTS = {
    'b0': (5_288_548, 4_258_624),
    'b1': (7_794_184, 6_764_260),
    'b2': (9_109_994, 7_977_158),
    'b3': (12_233_232, 10_997_484),
    'b4': (19_341_616, 17_900_044),
    'b5': (30_389_784, 28_742_388),
    'b6': (43_040_704, 41_187_484),
    'b7': (66_347_960, 64_288_916),
}


@pytest.mark.parametrize('variant', sorted(REFERENCE_COUNTS))
def test_parameter_counts_equal_reference(variant):
  # The counts do not depend on the resolution: 32 px keeps the trace cheap.
  for num_classes, expected in zip((1000, 196), REFERENCE_COUNTS[variant]):
    assert count_params(EfficientNet(num_classes=num_classes, variant=variant)) == expected


@pytest.mark.parametrize('variant,reference', [('b0', 385.8), ('b7', 37745.9)])
def test_macs_at_the_native_resolution_within_2_percent_of_reference(variant, reference):
  # REFERENCE.md MACs (conv + matmul, batch 1, millions); measured -1.0% (B0) ... -0.2% (B7), all variants.
  from lightcls import summary
  size = VARIANTS[variant].resolution
  rows = summary.block_rows(EfficientNet(num_classes=1000, variant=variant, layer=LayerConfig(conv_impl='xla')),
                            (size, size, 3))
  assert sum(row.macs for row in rows) / 1e6 == pytest.approx(reference, rel=0.02)


def test_compound_scaling_table():
  assert VARIANTS['b0'] == (1.0, 1.0, 224, 0.2) and VARIANTS['b7'] == (2.0, 3.1, 600, 0.5)
  assert stage_repeats(1.0) == (1, 2, 2, 3, 3, 4, 1)
  assert sum(stage_repeats(VARIANTS['b7'].depth)) == 55  # ceil per stage: 4 + 7 + 7 + 10 + 10 + 13 + 4


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match='unknown EfficientNet variant'):
    count_params(EfficientNet(num_classes=10, variant='b9'))


def test_returns_logits_and_pre_logit_features():
  model = EfficientNet(num_classes=7, variant='b2')
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  logits, features = jax.eval_shape(lambda v: model.apply(v, x, return_features=True), variables)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert features.shape == (2, 1408)  # 1280 * 1.1
  narrow = EfficientNet(num_classes=7, variant='b2', width=0.5, head_features=640)
  assert jax.eval_shape(lambda: narrow.init_with_output(jax.random.PRNGKey(0), x, return_features=True)
                        )[0][1].shape == (2, 640)


def test_small_input_keeps_four_times_the_resolution_with_the_same_weights():
  x = jnp.zeros((1, 32, 32, 3))
  model, small = EfficientNet(num_classes=10), EfficientNet(num_classes=10, small_input=True)
  assert count_params(model) == count_params(small)
  last_map = lambda m: jax.eval_shape(
      lambda: m.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True))[1]['intermediates']
  assert last_map(model)['head']['__call__'][0].shape[1:3] == (1, 1)   # total stride 32
  assert last_map(small)['head']['__call__'][0].shape[1:3] == (4, 4)   # total stride 8


def test_drop_path_rate_grows_linearly_with_the_block_index():
  rates = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, DropPath):
      rates[context.module.scope.path[0]] = context.module.rate
    return next_fun(*args, **kwargs)

  model = EfficientNet(num_classes=10, drop_path=0.3)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  # B0's 16 blocks: all but the first of each stage keep width and resolution (the first and last stage have one).
  assert sorted(rates, key=lambda name: int(name[5:])) == [f'block{i}' for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
  for name, rate in rates.items():
    assert rate == pytest.approx(0.3 * int(name[5:]) / 16)


def test_drop_path_drops_whole_residual_branches_in_training_only():
  block = MBConv(features=8, expansion=2, drop_path=0.5)
  no_drop = MBConv(features=8, expansion=2, drop_path=0.0)
  x = np.random.default_rng(1).standard_normal((16, 4, 4, 8)).astype(np.float32)

  @jax.jit
  def outputs(rng):
    variables = block.init(jax.random.PRNGKey(0), x, train=False)
    train = lambda m: m.apply(variables, x, train=True, rngs={'dropout': rng}, mutable=['batch_stats'])[0]
    evaluate = lambda m: m.apply(variables, x, train=False)
    return train(block), train(no_drop), evaluate(block), evaluate(no_drop)

  (y, full, evaluated, evaluated_no_drop), (again, _, _, _), (other, _, _, _) = (
      jax.device_get(outputs(jax.random.PRNGKey(seed))) for seed in (2, 2, 3))
  np.testing.assert_array_equal(y, again)  # deterministic given the rng
  assert not np.array_equal(y, other)
  dropped = np.all(y == x, axis=(1, 2, 3))
  assert 0 < dropped.sum() < len(x)
  # The kept examples carry the whole branch scaled by 1 / (1 - rate); BatchNorm sees the same batch either way.
  np.testing.assert_allclose(y[~dropped], (x + (full - x) / 0.5)[~dropped], atol=1e-5, rtol=1e-5)
  # Eval mode: no dropping, no scaling.
  np.testing.assert_array_equal(evaluated, evaluated_no_drop)


# Input size of the Keras comparison: the weights do not depend on the resolution, so all run small (batch 2);
# 72 px gives odd feature maps (9, 5, 3) where TF "SAME" padding is symmetric, 64 px even ones where it is not.
KERAS_SIZES = {'b0': 72, 'b1': 64, 'b2': 72, 'b3': 64, 'b4': 64, 'b5': 72, 'b6': 64, 'b7': 64}


def assert_outputs_match(logits, features, ref_logits, ref_features):
  # O(1) logits that depend on the image: not a comparison of constants or of near-zero numbers.
  assert np.abs(ref_logits).max() > 1.0 and np.ptp(ref_logits, axis=0).max() > 0.02
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
  np.testing.assert_allclose(features, ref_features, atol=1e-4, rtol=0)


# Keras' Variable.numpy() warns (NumPy 2 copy keyword) once per weight read by the port.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize('variant', sorted(KERAS_SIZES))
def test_logits_equal_keras_with_ported_random_weights(variant):
  from tests import reference
  from tests.models import equivalence
  keras = reference.keras()
  size = KERAS_SIZES[variant]
  build = lambda: getattr(keras.applications, f'EfficientNet{variant.upper()}')(
      weights=None, classes=10, classifier_activation=None, input_shape=(size, size, 3))
  # Compared after Keras' input Rescaling(1/255) and Normalization, which lightcls leaves to the data pipeline.
  keras_model = equivalence.keras_after(equivalence.keras_with_random_weights(build), 'stem_conv_pad')
  model = EfficientNet(num_classes=10, variant=variant, layer=LayerConfig(padding='same', bn_eps=1e-3))
  images = equivalence.random_images((2, size, size, 3))
  variables = equivalence.calibrated_port_from_keras(model, keras_model, images)
  assert_outputs_match(*equivalence.lightcls_outputs(model, variables, images),
                       *equivalence.keras_predict_outputs(keras_model, images))


def test_logits_equal_timm_with_ported_random_weights():
  from tests import reference
  from tests.models import equivalence
  torch_model = reference.timm().create_model('efficientnet_b0', num_classes=10).eval()
  model = EfficientNet(num_classes=10, variant='b0')  # timm's flavour: symmetric padding, eps 1e-5
  images = equivalence.random_images((2, 64, 64, 3))
  variables = equivalence.calibrated_port_from_timm(model, torch_model, images)
  logits, features = equivalence.lightcls_outputs(model, variables, images)
  assert_outputs_match(logits, features, *equivalence.timm_outputs(torch_model, images))
  # The statistics come from this very batch: eval mode must use them, not the batch's, so one image alone
  # gives the same logits.
  np.testing.assert_allclose(equivalence.lightcls_outputs(model, variables, images[:1])[0], logits[:1],
                             atol=1e-5, rtol=0)


def test_registry_builds_every_variant_and_rejects_the_thesis_head():
  from configs import default
  from lightcls.models import create_model
  config = default.get_config().model
  for variant, scaling in VARIANTS.items():
    config.name = f'efficientnet_{variant}'
    model = create_model(config, 196)
    assert (model.variant, model.dropout, model.drop_path, model.head_features) == (variant, scaling.dropout, 0.2,
                                                                                     None)
  assert count_params(model) == REFERENCE_COUNTS['b7'][1]
  config.head = 'thesis'
  with pytest.raises(ValueError, match='head'):
    create_model(config, 196)
