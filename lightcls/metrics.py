"""clu metric collections for training and evaluation.

(No `from __future__ import annotations` here: clu reads the metric classes from the annotations.)
"""
import flax
import jax
import jax.numpy as jnp
from clu import metrics


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per example: 1.0 if the label is among the k highest logits (a tie with the label counts as correct)."""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


@flax.struct.dataclass
class Top5(metrics.Average):

  @classmethod
  def from_model_output(cls, *, logits: jax.Array, labels: jax.Array, mask: 'jax.Array | None' = None, **_):
    return super().from_model_output(values=top_k_correct(logits, labels, 5), mask=mask)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1: metrics.Accuracy
  top5: Top5
  learning_rate: metrics.LastValue.from_output('learning_rate')


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')  # per-example losses, so the padding mask applies
  top1: metrics.Accuracy
  top5: Top5
