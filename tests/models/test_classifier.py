"""The cosine classifier (AM-Softmax's head) and its option in every model, the registry and weight imports."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lightcls import models
from lightcls.models import convert
from lightcls.models.ghostnet import GhostNet
from lightcls.models.layers import Classifier, LayerConfig
from tests import reference

SHAPE = (1, 32, 32, 3)


def features(seed=0, shape=(4, 16)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def numpy_cosines(x, kernel):
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_cosine_classifier_gives_float32_cosines_of_features_and_weight_columns(dtype):
  head = Classifier(num_classes=5, dropout=0.5, layer=LayerConfig(dtype=dtype), kind='cosine')
  x = features() * 10  # the scale of the features must not matter
  variables = head.init(jax.random.PRNGKey(0), x, train=False)
  assert jax.tree.map(np.shape, variables['params']) == {'fc': {'kernel': (16, 5)}}
  cosines = head.apply(variables, x, train=False)
  assert cosines.dtype == jnp.float32
  np.testing.assert_allclose(cosines, numpy_cosines(x, variables['params']['fc']['kernel']), atol=1e-6)
  assert np.abs(cosines).max() <= 1.0


def test_cosine_classifier_has_a_finite_gradient_for_all_zero_features():
  # ReLU features can all be 0; a plain norm has a NaN gradient there.
  head = Classifier(num_classes=5, dropout=0.0, kind='cosine')
  variables = head.init(jax.random.PRNGKey(0), features(), train=False)
  grad = jax.grad(lambda x: head.apply(variables, x, train=False).sum())(jnp.zeros((2, 16)))
  assert np.isfinite(grad).all()


def count_params(model):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(SHAPE)))
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def model_config(name, **overrides):
  config = default.get_config().model
  config.update(name=name, width=0.25, small_input=True, **overrides)
  return config


@pytest.mark.parametrize('name', ['ghostnet', 'mobilenet_v1', 'mobilenet_v2', 'mobilenet_v3_small',
                                  'efficientnet_b0'])
def test_every_model_takes_a_cosine_classifier_that_drops_only_the_bias(name):
  linear = models.create_model(model_config(name), num_classes=7)
  cosine = models.create_model(model_config(name, classifier='cosine'), num_classes=7)
  assert cosine.classifier == 'cosine'
  assert count_params(linear) - count_params(cosine) == 7


def test_registry_rejects_an_unknown_classifier_naming_the_key():
  with pytest.raises(ValueError, match=r"^model.classifier='arcface' is not one of \('linear', 'cosine'\)"):
    models.create_model(model_config('ghostnet', classifier='arcface'), num_classes=7)


def fresh_variables(model):
  # Random arrays of the variables' shapes: a port only reads shapes, and tracing is far cheaper than init.
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(SHAPE)))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def test_timm_weights_load_into_a_cosine_model_all_but_the_biased_classifier(tmp_path):
  import torch
  timm_model = reference.timm().create_model('ghostnet_050', num_classes=10).eval()
  path = str(tmp_path / 'ghostnet_050.pth')
  torch.save(timm_model.state_dict(), path)
  model = GhostNet(num_classes=10, width=0.5, classifier='cosine')
  fresh = fresh_variables(model)
  loaded = convert.load_initial_variables(path, None, model, fresh, SHAPE)
  np.testing.assert_array_equal(loaded['params']['classifier']['fc']['kernel'],
                                fresh['params']['classifier']['fc']['kernel'])
  head = timm_model.state_dict()['conv_head.weight'].numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(loaded['params']['head']['kernel'], head)


def test_weights_of_a_linear_run_load_into_a_cosine_model_but_its_classifier():
  rng = np.random.default_rng(0)
  stem, kernel = rng.standard_normal((3, 3, 3, 8)), rng.standard_normal((16, 10))
  linear = {'params': {'stem': {'kernel': stem}, 'classifier': {'fc': {'kernel': kernel, 'bias': np.ones(10)}}}}
  cosine = {'params': {'stem': {'kernel': np.zeros_like(stem)}, 'classifier': {'fc': {'kernel': kernel * 0}}}}
  loaded = convert.port_by_path(cosine, linear, 'run')
  np.testing.assert_array_equal(loaded['params']['stem']['kernel'], stem)
  np.testing.assert_array_equal(loaded['params']['classifier']['fc']['kernel'], 0.0)
  back = convert.port_by_path(linear, cosine, 'run')
  np.testing.assert_array_equal(back['params']['classifier']['fc']['bias'], 1.0)
