"""Starting from reference weights: timm/PyTorch files into lightcls models, frozen blocks."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lightcls import optim
from lightcls.models import convert
from lightcls.models.ghostnet import GhostNet
from tests import reference
from tests.models import equivalence

SHAPE = (1, 32, 32, 3)


@pytest.fixture(scope='module')
def timm_ghostnet():
  torch_model = reference.timm().create_model('ghostnet_050', num_classes=1000).eval()
  reference.randomize_torch_batchnorm(torch_model)
  return torch_model


def fresh_variables(model, channels: int = 3):
  """Variables of the model's structure with random values, drawn with numpy: what is loaded replaces them
  or is compared with them, and running GhostNet's initialiser takes 25 s to compile (70 s eagerly)."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(SHAPE[:3] + (channels,)))
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_state_dict_file_loads_and_a_new_class_count_keeps_the_fresh_classifier(timm_ghostnet, tmp_path):
  import torch
  path = str(tmp_path / 'ghostnet_050.pth')
  torch.save(timm_ghostnet.state_dict(), path)
  model = GhostNet(num_classes=10, width=0.5)
  fresh = fresh_variables(model)
  loaded = convert.load_initial_variables(path, None, model, fresh, SHAPE)
  np.testing.assert_array_equal(loaded['params']['classifier']['fc']['kernel'],
                                fresh['params']['classifier']['fc']['kernel'])
  stem = timm_ghostnet.state_dict()['conv_stem.weight'].numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(loaded['params']['stem']['conv']['kernel'], stem)
  running_var = timm_ghostnet.state_dict()['blocks.9.0.bn1.running_var'].numpy()
  np.testing.assert_array_equal(loaded['batch_stats']['last']['bn']['var'], running_var)


def test_safetensors_file_is_read_in_the_module_order_of_the_named_timm_model(timm_ghostnet, tmp_path):
  import torch
  from safetensors.torch import save_file
  torch.save(timm_ghostnet.state_dict(), str(tmp_path / 'a.pth'))
  save_file(timm_ghostnet.state_dict(), str(tmp_path / 'a.safetensors'))
  model = GhostNet(num_classes=1000, width=0.5)
  fresh = fresh_variables(model)
  from_pth = convert.load_initial_variables(str(tmp_path / 'a.pth'), None, model, fresh, SHAPE)
  from_safetensors = convert.load_initial_variables(str(tmp_path / 'a.safetensors'), 'ghostnet_050', model,
                                                    fresh, SHAPE)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, from_pth, from_safetensors)))
  with pytest.raises(ValueError, match='config.init.reference must name the timm model'):
    convert.load_initial_variables(str(tmp_path / 'a.safetensors'), None, model, fresh, SHAPE)


def test_weights_of_another_architecture_fail_listing_the_layers_that_do_not_fit(timm_ghostnet, tmp_path):
  import torch
  path = str(tmp_path / 'ghostnet_050.pth')
  torch.save(timm_ghostnet.state_dict(), path)
  model = GhostNet(num_classes=1000, width=1.0)
  with pytest.raises(convert.PortError, match=r'stem/conv <- conv_stem: weight \(3, 3, 3, 16\) vs \(3, 3, 3, 8\)'):
    convert.load_initial_variables(path, None, model, fresh_variables(model), SHAPE)


def test_ported_timm_file_gives_timm_logits(timm_ghostnet, tmp_path):
  import torch
  path = str(tmp_path / 'ghostnet_050.pth')
  equivalence.scale_torch_classifier(timm_ghostnet)
  torch.save(timm_ghostnet.state_dict(), path)
  model = GhostNet(num_classes=1000, width=0.5)
  images = equivalence.random_images((2, 64, 64, 3))
  variables = convert.load_initial_variables(path, None, model, fresh_variables(model), SHAPE)
  logits, _ = equivalence.lightcls_outputs(model, variables, images)
  np.testing.assert_allclose(logits, equivalence.timm_outputs(timm_ghostnet, images)[0], atol=1e-4, rtol=0)


def test_frozen_blocks_follow_the_forward_order():
  blocks = ['stem', 'block0', 'block1', 'head', 'classifier']
  freeze = lambda **kw: ml_collections.ConfigDict(dict(dict(trainable='all', last_blocks=1), **kw))
  assert optim.frozen_blocks(blocks, freeze()) == ()
  assert optim.frozen_blocks(blocks, freeze(trainable='classifier')) == ('stem', 'block0', 'block1', 'head')
  assert optim.frozen_blocks(blocks, freeze(trainable='last_blocks', last_blocks=2)) == ('stem', 'block0',
                                                                                          'block1')
  with pytest.raises(ValueError, match='between 1 and the model'):
    optim.frozen_blocks(blocks, freeze(trainable='last_blocks', last_blocks=6))


def test_an_rgb_stem_loads_into_a_grayscale_model_as_the_sum_of_its_filters(timm_ghostnet, tmp_path):
  import torch
  path = str(tmp_path / 'ghostnet_050.pth')
  torch.save(timm_ghostnet.state_dict(), path)
  model = GhostNet(num_classes=1000, width=0.5)
  gray = convert.load_initial_variables(path, None, model, fresh_variables(model, channels=1), (1, 32, 32, 1))
  rgb = convert.load_initial_variables(path, None, model, fresh_variables(model), SHAPE)
  images = equivalence.random_images((2, 32, 32, 1))
  np.testing.assert_allclose(equivalence.lightcls_outputs(model, gray, images)[0],
                             equivalence.lightcls_outputs(model, rgb, np.repeat(images, 3, axis=-1))[0],
                             atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_keras_weights_file_loads_through_the_named_keras_application(tmp_path):
  from lightcls.models.layers import LayerConfig
  from lightcls.models.mobilenet import MobileNetV1
  keras = reference.keras()
  keras_model = equivalence.keras_with_random_weights(lambda: keras.applications.MobileNet(weights=None))
  path = str(tmp_path / 'mobilenet.weights.h5')
  keras_model.save_weights(path)
  model = MobileNetV1(num_classes=10, width=1.0, layer=LayerConfig(padding='same', bn_eps=1e-3))
  fresh = fresh_variables(model)
  loaded = convert.load_initial_variables(path, 'MobileNet', model, fresh, SHAPE)
  depthwise = keras_model.get_layer('conv_dw_1').kernel.numpy()  # (3, 3, C, 1)
  first_dw = convert.layer_order(model, SHAPE)[2]
  np.testing.assert_array_equal(convert._get(loaded['params'], first_dw + ('kernel',)),
                                depthwise.transpose(0, 1, 3, 2))
  np.testing.assert_array_equal(loaded['params']['classifier']['fc']['kernel'],
                                fresh['params']['classifier']['fc']['kernel'])
  with pytest.raises(ValueError, match='config.init.reference must name the keras.applications model'):
    convert.load_initial_variables(path, None, model, fresh, SHAPE)


def test_a_keras_input_normalization_layer_is_left_to_the_data_pipeline():
  keras = reference.keras()
  inputs = keras.Input((8, 8, 3))
  normalization = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.16])
  outputs = keras.layers.Conv2D(4, 3, name='conv')(normalization(inputs))
  layers = convert.keras_layers(keras.Model(inputs, outputs))
  assert [name for name, _ in layers] == ['conv']
