import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lightcls import models
from lightcls.models.layers import LayerConfig
from lightcls.models.mobilenet import MobileNetV1, MobileNetV2, MobileNetV3

# Keras 3.15's Variable.numpy() calls np.array(variable), which NumPy 2 warns about once per weight.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

KERAS_SAME = LayerConfig(padding='same', bn_eps=1e-3)  # every Keras MobileNet: TF "SAME", BatchNorm eps 1e-3


def count_params(model, size=224, channels=3):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))
  return sum(x.size for x in jax.tree.leaves(variables['params']))


# Trainable parameter counts of REFERENCE.md (Keras applications; timm's equal them).
@pytest.mark.parametrize('make,expected_1000,expected_196', [
    (lambda n: MobileNetV1(n, width=1.0), 4_231_976, 3_407_876),
    (lambda n: MobileNetV1(n, width=0.75), 2_585_560, 1_967_284),
    (lambda n: MobileNetV2(n, width=1.0), 3_504_872, 2_474_948),
    (lambda n: MobileNetV3(n, 'large', width=1.0), 5_483_032, 4_453_108),
    (lambda n: MobileNetV3(n, 'large', width=0.75), 3_993_528, 2_963_604),
    (lambda n: MobileNetV3(n, 'small', width=1.0), 2_542_856, 1_718_756),
], ids=['v1_100', 'v1_075', 'v2_100', 'v3_large_100', 'v3_large_075', 'v3_small_100'])
def test_parameter_count_equals_reference(make, expected_1000, expected_196):
  assert count_params(make(1000)) == expected_1000
  assert count_params(make(196)) == expected_196


@pytest.mark.parametrize('model', [MobileNetV1(10, 0.5), MobileNetV2(10, 0.5), MobileNetV3(10, 'small', 0.75),
                                   MobileNetV3(10, 'large')], ids=['v1', 'v2', 'v3_small', 'v3_large'])
def test_small_input_keeps_four_times_the_resolution_with_the_same_weights(model):
  x = jnp.zeros((1, 32, 32, 3))
  small = model.clone(small_input=True)
  assert count_params(model, 32) == count_params(small, 32)

  def last_map(m):
    _, state = jax.eval_shape(
        lambda: m.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True))
    blocks = [k for k in state['intermediates'] if k.startswith('block')]
    return state['intermediates'][max(blocks, key=lambda k: int(k[5:]))]['__call__'][0].shape[1:3]

  assert last_map(model) == (1, 1)  # total stride 32
  assert last_map(small) == (4, 4)  # total stride 8


def test_returns_logits_and_pre_logit_features():
  x = jnp.zeros((2, 32, 32, 3))
  for model, width in [(MobileNetV1(7, 0.75), 768), (MobileNetV2(7, 0.5), 1280), (MobileNetV2(7, 1.4), 1792),
                       (MobileNetV3(7, 'small'), 1024), (MobileNetV3(7, 'large', head_features=640), 640)]:
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    logits, features = jax.eval_shape(lambda v: model.apply(v, x, return_features=True), variables)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert features.shape == (2, width)


def model_config(name, **overrides):
  config = default.get_config().model
  config.name = name
  config.update(overrides)
  return config


@pytest.mark.parametrize('name,cls', [
    ('mobilenet_v1', MobileNetV1), ('mobilenet_v2', MobileNetV2),
    ('mobilenet_v3_small', MobileNetV3), ('mobilenet_v3_large', MobileNetV3)])
def test_registry_builds_and_rejects_options_the_architecture_lacks(name, cls):
  model = models.create_model(model_config(name, width=0.75, bn_eps=1e-3, padding='same'), num_classes=5)
  assert type(model) is cls and model.width == 0.75 and model.layer == KERAS_SAME
  if cls is MobileNetV3:
    assert model.size == name.rpartition('_')[2]
  with pytest.raises(ValueError, match='head'):
    models.create_model(model_config(name, head='thesis'), num_classes=5)
  with pytest.raises(ValueError, match='drop_path'):
    models.create_model(model_config(name, drop_path=0.1), num_classes=5)
  if cls is MobileNetV1:
    with pytest.raises(ValueError, match='head_features'):
      models.create_model(model_config(name, head_features=512), num_classes=5)
  else:
    assert models.create_model(model_config(name, head_features=512), num_classes=5).head_features == 512


def keras_mobilenet(constructor, size, **kwargs):
  from tests import reference
  from tests.models import equivalence
  keras = reference.keras()
  return equivalence.keras_with_random_weights(lambda: getattr(keras.applications, constructor)(
      input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None, **kwargs))


def assert_compares_image_dependent_numbers(logits, features):
  """Neither near-zero numbers nor constants: the two images' outputs differ (BatchNorm kept the signal)."""
  assert np.abs(logits).max() > 1.0
  assert np.abs(features[0] - features[1]).max() > 0.05


V3_KERAS = dict(include_preprocessing=False, minimalistic=False)


# 64 px for V1: even maps at every stride-2 layer, where Keras V1's fixed (0, 1) padding is TF "SAME". V2 and
# V3 pad as "SAME" at any size: 72 px gives odd maps (9, 5, 3), where "SAME" pads symmetrically.
# BatchNorm is calibrated on the compared images; for the ReLU networks V1 and V2 with small variances raised
# (damped_port_from_keras: exact statistics make them chaotic in float32), for V3 exactly (damping would
# leave its outputs almost independent of the image).
@pytest.mark.parametrize('constructor,kwargs,model,size', [
    ('MobileNet', dict(alpha=1.0), MobileNetV1(10, 1.0, layer=KERAS_SAME), 64),
    ('MobileNet', dict(alpha=0.75), MobileNetV1(10, 0.75, layer=KERAS_SAME), 64),
    ('MobileNetV2', dict(alpha=1.0), MobileNetV2(10, 1.0, layer=KERAS_SAME), 72),
    ('MobileNetV3Large', dict(alpha=1.0, **V3_KERAS), MobileNetV3(10, 'large', 1.0, layer=KERAS_SAME), 72),
    ('MobileNetV3Large', dict(alpha=0.75, **V3_KERAS), MobileNetV3(10, 'large', 0.75, layer=KERAS_SAME), 72),
    ('MobileNetV3Small', dict(alpha=1.0, **V3_KERAS), MobileNetV3(10, 'small', 1.0, layer=KERAS_SAME), 72),
    ('MobileNetV3Small', dict(alpha=0.75, **V3_KERAS), MobileNetV3(10, 'small', 0.75, layer=KERAS_SAME), 72),
], ids=['v1_100', 'v1_075', 'v2_100', 'v3_large_100', 'v3_large_075', 'v3_small_100', 'v3_small_075'])
def test_logits_equal_keras_with_ported_random_weights(constructor, kwargs, model, size):
  from tests.models import equivalence
  keras_model = keras_mobilenet(constructor, size, **kwargs)
  images = equivalence.random_images((2, size, size, 3))
  port = (equivalence.calibrated_port_from_keras if isinstance(model, MobileNetV3)
          else equivalence.damped_port_from_keras)
  variables = port(model, keras_model, images)
  logits, features = equivalence.lightcls_outputs(model, variables, images)
  ref_logits, ref_features = equivalence.keras_outputs(keras_model, images)
  assert_compares_image_dependent_numbers(ref_logits, ref_features)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
  np.testing.assert_allclose(features, ref_features, atol=1e-4, rtol=0)


def test_logits_equal_timm_mobilenetv3_large_100_with_ported_random_weights():
  import torch

  from tests import reference
  from tests.models import equivalence
  torch.manual_seed(0)  # timm's own initialisation of the convolutions
  torch_model = reference.timm().create_model('mobilenetv3_large_100', num_classes=10).eval()
  model = MobileNetV3(10, 'large', 1.0)  # timm: symmetric padding, eps 1e-5 (LayerConfig's defaults)
  images = equivalence.random_images((2, 64, 64, 3))
  variables = equivalence.calibrated_port_from_timm(model, torch_model, images)
  logits, features = equivalence.lightcls_outputs(model, variables, images)
  ref_logits, ref_features = equivalence.timm_outputs(torch_model, images)
  assert_compares_image_dependent_numbers(ref_logits, ref_features)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
  np.testing.assert_allclose(features, ref_features, atol=1e-4, rtol=0)
