import jax
import jax.numpy as jnp
import numpy as np

from lightcls import metrics


def test_top_k_correct_matches_a_sort_based_reference():
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (200, 20)))
  labels = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (200,), 0, 20))
  for k in (1, 5):
    reference = np.array([label in np.argsort(-row)[:k] for row, label in zip(logits, labels)], np.float32)
    np.testing.assert_array_equal(metrics.top_k_correct(jnp.asarray(logits), jnp.asarray(labels), k), reference)


def test_eval_metrics_ignore_masked_rows():
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
  labels = jnp.array([0, 0, 1])
  loss = jnp.array([0.1, 2.0, 99.0])
  m = metrics.EvalMetrics.single_from_model_output(loss=loss, logits=logits, labels=labels,
                                                   mask=jnp.array([True, True, False])).compute()
  assert float(m['top1']) == 0.5 and abs(float(m['loss']) - 1.05) < 1e-6
