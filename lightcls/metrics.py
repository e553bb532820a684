"""Metrics: clu collections for the train and eval steps, and host-side (numpy) metrics over a whole eval split.

(No `from __future__ import annotations` here: clu reads the metric classes from the annotations.)
"""
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
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


NO_BAD_STEP = np.iinfo(np.int32).max


@flax.struct.dataclass
class FirstNonfiniteStep(metrics.Metric):
  """The first step whose loss or gradient norm was NaN or infinite; NO_BAD_STEP if none was. A min over the
  steps merged, so the host learns the exact step while it reads metrics only every few steps."""
  step: jax.Array

  @classmethod
  def empty(cls) -> 'FirstNonfiniteStep':
    return cls(step=jnp.array(NO_BAD_STEP, jnp.int32))

  @classmethod
  def from_model_output(cls, *, loss: jax.Array, grad_norm: jax.Array, step: jax.Array, **_):
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    return cls(step=jnp.where(finite, NO_BAD_STEP, step).astype(jnp.int32))

  def merge(self, other: 'FirstNonfiniteStep') -> 'FirstNonfiniteStep':
    return type(self)(step=jnp.minimum(self.step, other.step))

  def compute(self) -> jax.Array:
    return self.step


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1: metrics.Accuracy
  top5: Top5
  learning_rate: metrics.LastValue.from_output('learning_rate')
  grad_norm: metrics.Average.from_output('grad_norm')  # global L2 norm of the gradient the update used
  first_nonfinite_step: FirstNonfiniteStep


def metrics_state(collection: 'TrainMetrics | None') -> 'dict | None':
  """Accumulated train metrics as JSON-able nested lists (saved with a checkpoint: a run resumed mid-way
  through a logging window or an epoch continues its sums exactly)."""
  if collection is None:
    return None
  return jax.tree.map(lambda x: np.asarray(x).tolist(), flax.serialization.to_state_dict(collection))


def metrics_from_state(saved: 'dict | None') -> 'TrainMetrics | None':
  """The inverse of `metrics_state`, in the dtypes the train step gives (float32 round-trips through JSON)."""
  if saved is None:
    return None
  template = TrainMetrics.empty()
  restored = flax.serialization.from_state_dict(template, saved)
  return jax.tree.map(lambda t, v: jnp.asarray(np.asarray(v, np.asarray(t).dtype)), template, restored)


# Host-side evaluation metrics: numpy over the gathered logits (N, C), integer labels (N,) and losses (N,).


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax probabilities, in float64 so that ranking by them adds as few ties as possible."""
  shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
  exp = np.exp(shifted)
  return exp / np.sum(exp, axis=-1, keepdims=True)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Fraction of examples whose label is among the k highest logits; as in `top_k_correct`, a tie with the
  label's logit counts as correct (so with k >= C every example is correct)."""
  label_logit = np.take_along_axis(logits, labels[:, None], axis=-1)
  return float(np.mean(np.sum(logits > label_logit, axis=-1) < k))


def class_recalls(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Per class: correct predictions / examples of that class; NaN for classes without examples."""
  support = np.bincount(labels, minlength=num_classes)
  correct = np.bincount(labels, weights=predictions == labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return correct / support


def mean_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Mean of the per-class recalls over the classes present in `labels` (sklearn's balanced accuracy)."""
  return float(np.nanmean(class_recalls(predictions, labels, num_classes)))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Average precision of one ranking: sum over thresholds n of (R_n - R_{n-1}) * P_n, the thresholds being
  the distinct scores from high to low, so tied samples enter together (sklearn's average_precision_score).
  Equivalently: the mean over positives of the precision at the end of the positive's tie group.
  NaN without positives."""
  if not np.any(positives):
    return float('nan')
  order = np.argsort(-scores, kind='stable')
  scores, positives = scores[order], positives[order]
  precision = np.cumsum(positives) / np.arange(1, len(scores) + 1)
  new_group = np.r_[True, scores[1:] != scores[:-1]]
  group_end = np.r_[new_group[1:], True]
  group = np.cumsum(new_group) - 1
  return float(np.mean(precision[group_end][group[positives]]))


def average_precisions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per class c: the average precision of ranking all samples by scores[:, c], the positives being the
  samples labelled c; NaN for classes without positives. Evaluation passes softmax probabilities as scores
  (as seed 002 ranks by predicted probability): per class, that ranking differs from the one by logits."""
  return np.array([average_precision(scores[:, c], labels == c) for c in range(scores.shape[1])])


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """mAP: the mean of `average_precisions` over the classes that have positives (seed 002, REFERENCE.md)."""
  return float(np.nanmean(average_precisions(scores, labels)))


def eval_metrics(logits: np.ndarray, labels: np.ndarray, losses: np.ndarray) -> dict[str, float]:
  """Whole-split metrics: mean loss, top-1 and top-5 accuracy (ties with the label count as correct; 1.0
  for top-5 with fewer than 5 classes), mean class accuracy and mAP over softmax probabilities."""
  predictions = np.argmax(logits, axis=-1)
  return {'loss': float(np.mean(losses)),
          'top1': top_k_accuracy(logits, labels, 1),
          'top5': top_k_accuracy(logits, labels, 5),
          'mean_class_accuracy': mean_class_accuracy(predictions, labels, logits.shape[1]),
          'map': mean_average_precision(softmax(logits), labels)}


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 (num_classes, num_classes) counts: entry [t, p] = examples of true class t predicted as p."""
  flat = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
  return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
  return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _number(value: float) -> float | None:
  """A JSON-safe float: None for NaN."""
  return None if np.isnan(value) else float(value)


def class_report(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
  """JSON-serialisable per-class report of argmax predictions.

  'classes': per class name, precision tp/(tp+fp), recall = accuracy tp/support, f1 2tp/(2tp+fp+fn) (each 0
  where undefined), support, AP over softmax probabilities (None without positives);
  'macro': precision, recall, f1 and AP averaged over the classes present in `labels` (macro recall is the
  mean class accuracy, macro AP the mAP); 'top1'; 'confusion_matrix' as nested lists (rows: true class).
  """
  matrix = confusion_matrix(np.argmax(logits, axis=-1), labels, len(class_names))
  tp, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
  precision, recall = _ratio(tp, predicted), _ratio(tp, support)
  f1 = _ratio(2 * tp, support + predicted)
  ap = average_precisions(softmax(logits), labels)
  present = support > 0
  classes = [{'name': name, 'precision': float(p), 'recall': float(r), 'f1': float(f), 'support': int(s),
              'accuracy': float(r), 'ap': _number(a)}
             for name, p, r, f, s, a in zip(class_names, precision, recall, f1, support, ap)]
  macro = {'precision': float(precision[present].mean()), 'recall': float(recall[present].mean()),
           'f1': float(f1[present].mean()), 'ap': float(ap[present].mean()), 'support': int(support.sum())}
  return {'classes': classes, 'macro': macro, 'top1': float(tp.sum() / support.sum()),
          'confusion_matrix': matrix.tolist()}


def report_text(report: dict) -> str:
  """A `class_report` as an aligned table like sklearn's classification_report (names left-aligned, one
  line per class), then the macro averages and top-1."""
  width = max(len('macro avg'), *(len(row['name']) for row in report['classes']))
  header = f'{"":>{width}}  {"precision":>9}  {"recall":>9}  {"f1-score":>9}  {"AP":>9}  {"support":>9}'

  def line(name: str, row: dict) -> str:
    ap = '-' if row['ap'] is None else f'{row["ap"]:.4f}'
    return (f'{name:<{width}}  {row["precision"]:9.4f}  {row["recall"]:9.4f}  {row["f1"]:9.4f}  {ap:>9}  '
            f'{row["support"]:9d}')

  rows = [line(row['name'], row) for row in report['classes']]
  top1 = f'{"top-1":<{width}}  {"":>9}  {"":>9}  {report["top1"]:9.4f}  {"":>9}  {report["macro"]["support"]:9d}'
  return '\n'.join([header, '', *rows, '', line('macro avg', report['macro']), top1]) + '\n'


# Colour stops of the confusion picture, from recall 0 to recall 1: white, mid blue, dark blue.
_COLOUR_STOPS = np.array([[255, 255, 255], [107, 174, 214], [8, 48, 107]], np.float64)
_GRID_COLOUR = (200, 200, 200)
_MIN_GRID_CELL = 8  # pixels per cell from which a grid separates the cells


def colour_map(values: np.ndarray) -> np.ndarray:
  """Values in [0, 1] as uint8 RGB, linear through `_COLOUR_STOPS` (0 white, 1 the darkest blue)."""
  positions = np.linspace(0, 1, len(_COLOUR_STOPS))
  channels = [np.interp(values, positions, _COLOUR_STOPS[:, i]) for i in range(3)]
  return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def confusion_image(matrix: np.ndarray, max_pixels: int = 800, grid: bool = True) -> np.ndarray:
  """uint8 (H, W, 3) picture of a confusion matrix for TensorBoard (`write_images` takes it as image[None]).

  Each row is normalised by its count (recall; rows without examples stay 0) and colour-mapped; each cell is
  a square block of max(1, max_pixels // C) pixels, so the side is at most max_pixels (C pixels if C is
  larger). With `grid` and blocks of at least 8 pixels, a 1-pixel grey line starts each cell but the first.
  """
  counts = np.asarray(matrix, np.float64)
  rows = counts.sum(axis=1, keepdims=True)
  recall = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
  cell = max(1, max_pixels // len(counts))
  image = colour_map(recall.repeat(cell, axis=0).repeat(cell, axis=1))
  if grid and cell >= _MIN_GRID_CELL:
    image[cell::cell, :] = _GRID_COLOUR
    image[:, cell::cell] = _GRID_COLOUR
  return image
