import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lightcls import losses

LABELS = np.array([0, 3, 8, 2, 2, 5])


def random_array(shape, seed=0, scale=1.0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale


def random_cosines(shape, seed=0):
  return np.tanh(random_array(shape, seed))  # in (-1, 1), as a cosine classifier gives


def soft_targets(seed=0):
  # MixUp-like: 0.7 on each own label, 0.3 on the next image's.
  own = np.eye(9)[LABELS]
  return 0.7 * own + 0.3 * np.roll(own, 1, axis=0)


def log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def seed_label_smoothing_ce(preds, target, epsilon):
  # Seed 001's LabelSmoothingCrossEntropy (reduction 'none'), transcribed in torch:
  # linear_combination(-log_preds.sum(-1) / n, nll, epsilon) = epsilon * x + (1 - epsilon) * nll.
  import torch.nn.functional as F
  n = preds.size()[-1]
  log_preds = F.log_softmax(preds, dim=-1)
  return epsilon * (-log_preds.sum(dim=-1) / n) + (1 - epsilon) * F.nll_loss(log_preds, target, reduction='none')


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_cross_entropy_equals_seed_001_label_smoothing_and_pytorch(eps):
  import torch
  import torch.nn.functional as F
  logits = random_array((6, 9), scale=3.0)
  got = losses.cross_entropy(logits, LABELS, eps)
  preds, target = torch.from_numpy(logits).double(), torch.from_numpy(LABELS)
  np.testing.assert_allclose(got, seed_label_smoothing_ce(preds, target, eps).numpy(), rtol=1e-5)
  np.testing.assert_allclose(got, F.cross_entropy(preds, target, reduction='none', label_smoothing=eps).numpy(),
                             rtol=1e-5)


def test_cross_entropy_of_soft_targets_equals_pytorch_class_probabilities():
  import torch
  import torch.nn.functional as F
  logits, targets = random_array((6, 9), scale=3.0), soft_targets()
  expected = F.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(targets), reduction='none',
                             label_smoothing=0.1)
  np.testing.assert_allclose(losses.cross_entropy(logits, targets, 0.1), expected.numpy(), rtol=1e-5)


def numpy_am_softmax(cosines, targets, margin, scale, eps=0.0):
  logp = log_softmax(scale * (cosines - margin * targets))
  smoothed = (1 - eps) * targets + eps / targets.shape[-1]
  return -(smoothed * logp).sum(-1)


@pytest.mark.parametrize('eps', [0.0, 0.1])
def test_am_softmax_is_cross_entropy_of_scaled_cosines_with_the_margin_on_the_target(eps):
  cosines = random_cosines((6, 9))
  np.testing.assert_allclose(losses.am_softmax(cosines, LABELS, 0.35, 5.0, eps),
                             numpy_am_softmax(cosines, np.eye(9)[LABELS], 0.35, 5.0, eps), rtol=1e-5)


def test_am_softmax_margin_is_shared_by_mixed_targets_in_proportion():
  cosines, targets = random_cosines((6, 9)), soft_targets()
  np.testing.assert_allclose(losses.am_softmax(cosines, targets, 0.35, 5.0),
                             numpy_am_softmax(cosines, targets, 0.35, 5.0), rtol=1e-5)


@pytest.mark.parametrize('num_classes,expected', [(2, 3.0), (10, 3.1073448), (196, 7.4571475)])
def test_automatic_scale_is_sqrt2_ln_c_minus_1_at_least_3(num_classes, expected):
  assert losses.am_softmax_scale(num_classes) == pytest.approx(expected, rel=1e-6)


def loss_config(**overrides):
  config = default.get_config().loss
  config.update(overrides)
  return config


def test_am_softmax_without_a_scale_uses_the_automatic_one():
  cosines = random_cosines((6, 9))
  loss_fn = losses.create_loss(loss_config(name='am_softmax', margin=0.2), num_classes=9)
  np.testing.assert_allclose(loss_fn(cosines, LABELS), numpy_am_softmax(cosines, np.eye(9)[LABELS], 0.2,
                                                                        losses.am_softmax_scale(9)), rtol=1e-5)
  assert losses.logit_scale(loss_config(name='am_softmax'), 196) == losses.am_softmax_scale(196)
  assert losses.logit_scale(loss_config(name='am_softmax', scale=12.0), 196) == 12.0
  assert losses.logit_scale(loss_config(name='cross_entropy', scale=12.0), 196) == 1.0


def numpy_entropy(logits):
  logp = log_softmax(logits)
  return -(np.exp(logp) * logp).sum(-1)


def test_confidence_penalty_subtracts_beta_times_the_prediction_entropy():
  logits = random_array((6, 9), scale=3.0)
  loss_fn = losses.create_loss(loss_config(confidence_penalty=0.4, label_smoothing=0.1), num_classes=9)
  expected = -(0.9 * np.eye(9)[LABELS] + 0.1 / 9) * log_softmax(logits)
  np.testing.assert_allclose(loss_fn(logits, LABELS), expected.sum(-1) - 0.4 * numpy_entropy(logits), rtol=1e-5)


def test_confidence_penalty_of_am_softmax_takes_the_entropy_of_the_margin_free_prediction():
  cosines = random_cosines((6, 9))
  loss_fn = losses.create_loss(loss_config(name='am_softmax', scale=6.0, confidence_penalty=0.4), num_classes=9)
  expected = numpy_am_softmax(cosines, np.eye(9)[LABELS], 0.35, 6.0) - 0.4 * numpy_entropy(6.0 * cosines)
  np.testing.assert_allclose(loss_fn(cosines, LABELS), expected, rtol=1e-5)


def test_a_loss_name_overrides_the_section_for_the_mutual_peer():
  cosines = random_cosines((6, 9))
  peer = losses.create_loss(loss_config(name='cross_entropy', scale=6.0), num_classes=9, name='am_softmax')
  np.testing.assert_allclose(peer(cosines, LABELS), numpy_am_softmax(cosines, np.eye(9)[LABELS], 0.35, 6.0),
                             rtol=1e-5)


def numpy_mutual_terms(logits, scales):
  consensus = np.mean([np.exp(log_softmax(s * z)) for z, s in zip(logits, scales)], axis=0)
  return [-(consensus * log_softmax(s * z)).sum(-1) for z, s in zip(logits, scales)]


def test_mutual_terms_are_cross_entropies_against_the_mean_scaled_prediction():
  logits, scales = [random_array((6, 9), scale=3.0), random_cosines((6, 9), seed=1)], [1.0, 5.0]
  for got, expected in zip(losses.mutual_terms(logits, scales), numpy_mutual_terms(logits, scales)):
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mutual_term_gradient_does_not_flow_through_the_consensus():
  logits, scales = [random_array((6, 9), scale=3.0), random_cosines((6, 9), seed=1)], [1.0, 5.0]
  term = lambda i, z0, z1: losses.mutual_terms([z0, z1], scales)[i].sum()
  own0, other0 = jax.grad(term, argnums=(1, 2))(0, *logits)
  other1, own1 = jax.grad(term, argnums=(1, 2))(1, *logits)
  np.testing.assert_array_equal(other0, 0.0)
  np.testing.assert_array_equal(other1, 0.0)
  assert jnp.abs(own0).max() > 1e-3 and jnp.abs(own1).max() > 1e-3


def full_config(**overrides):
  config = default.get_config()
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  return config


@pytest.mark.parametrize('overrides', [
    {}, {'loss.name': 'am_softmax', 'model.classifier': 'cosine'},
    {'mutual.enabled': True, 'mutual.loss': 'am_softmax'},  # the peer's classifier follows its loss
])
def test_check_accepts_workable_configs(overrides):
  losses.check(full_config(**overrides))


@pytest.mark.parametrize('overrides,message', [
    ({'loss.name': 'focal'}, r"^loss.name='focal' is not one of"),
    ({'mutual.loss': 'amsoftmax'}, r"^mutual.loss='amsoftmax' is not one of"),
    ({'loss.name': 'am_softmax'}, r"^loss.name='am_softmax' .*set config.model.classifier='cosine'"),
    ({'loss.margin': 1.0}, r'^loss.margin=1.0 must be in \[0, 1\)'),
    ({'loss.margin': -0.1}, r'^loss.margin=-0.1 must be in \[0, 1\)'),
    ({'loss.scale': 0.0}, r'^loss.scale=0.0 must be positive'),
    ({'loss.confidence_penalty': -0.1}, r'^loss.confidence_penalty=-0.1 must be >= 0'),
    ({'loss.label_smoothing': 1.0}, r'^loss.label_smoothing=1.0 must be in \[0, 1\)'),
])
def test_check_rejects_values_that_cannot_work_naming_the_key(overrides, message):
  with pytest.raises(ValueError, match=message):
    losses.check(full_config(**overrides))
