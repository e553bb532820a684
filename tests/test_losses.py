import jax
import numpy as np
import pytest

from lightcls import losses


def reference_smoothed_ce(logits, labels, eps):
  # PyTorch's CrossEntropyLoss(label_smoothing=eps): (1 - eps) * NLL + eps * mean over classes of -log p.
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
  nll = -logp[np.arange(len(labels)), labels]
  return (1 - eps) * nll + eps * (-logp.mean(-1))


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_cross_entropy_matches_pytorch_label_smoothing_formula(eps):
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (6, 9)) * 3, np.float64)
  labels = np.array([0, 3, 8, 2, 2, 5])
  got = losses.cross_entropy(logits.astype(np.float32), labels, eps)
  np.testing.assert_allclose(got, reference_smoothed_ce(logits, labels, eps), rtol=1e-5)
