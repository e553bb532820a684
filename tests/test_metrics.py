import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax
from sklearn import metrics as skm

from lightcls import metrics


def test_top_k_correct_matches_a_sort_based_reference():
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (200, 20)))
  labels = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (200,), 0, 20))
  for k in (1, 5):
    reference = np.array([label in np.argsort(-row)[:k] for row, label in zip(logits, labels)], np.float32)
    np.testing.assert_array_equal(metrics.top_k_correct(jnp.asarray(logits), jnp.asarray(labels), k), reference)


# Host-side evaluation metrics, against scikit-learn.

NUM_CLASSES = 7
ABSENT = 6  # a class that no example has


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
  """Logits (300, 7) that are informative about the labels; the labels leave out class 6."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, NUM_CLASSES - 1, 300)
  logits = rng.normal(size=(300, NUM_CLASSES)) + 1.5 * np.eye(NUM_CLASSES)[labels]
  return logits.astype(np.float32), labels


def sklearn_aps(scores: np.ndarray, labels: np.ndarray) -> list[float]:
  return [skm.average_precision_score(labels == c, scores[:, c]) for c in range(scores.shape[1]) if c != ABSENT]


def test_average_precisions_match_sklearn_per_class(data):
  logits, labels = data
  probabilities = scipy_softmax(logits, axis=1)
  np.testing.assert_allclose(np.delete(metrics.average_precisions(probabilities, labels), ABSENT),
                             sklearn_aps(probabilities, labels), rtol=1e-12)


def test_average_precisions_group_tied_scores_as_sklearn(data):
  logits, labels = data
  tied = np.round(scipy_softmax(logits, axis=1), 1)  # few distinct values: large tie groups
  np.testing.assert_allclose(np.delete(metrics.average_precisions(tied, labels), ABSENT),
                             sklearn_aps(tied, labels), rtol=1e-12)


def test_average_precision_takes_a_tie_group_at_once():
  # Thresholds 0.9 (P 1, R 1/2) and 0.5 (P 2/3, R 1): AP = 1/2 + 1/2 * 2/3, whatever the order inside the tie.
  for positives in ([1, 0, 1, 0], [1, 1, 0, 0]):
    ap = metrics.average_precision(np.array([0.9, 0.5, 0.5, 0.1]), np.array(positives, bool))
    assert ap == pytest.approx(5 / 6)


def test_average_precisions_are_nan_without_positives_and_the_mean_skips_them(data):
  logits, labels = data
  probabilities = scipy_softmax(logits, axis=1)
  assert np.isnan(metrics.average_precisions(probabilities, labels)[ABSENT])
  assert metrics.mean_average_precision(probabilities, labels) == pytest.approx(
      np.mean(sklearn_aps(probabilities, labels)), rel=1e-12)


def test_eval_map_ranks_by_softmax_probabilities_not_logits(data):
  logits, labels = data
  result = metrics.eval_metrics(logits, labels, np.zeros(len(labels)))
  probabilities = scipy_softmax(logits.astype(np.float64), axis=1)
  assert result['map'] == pytest.approx(np.mean(sklearn_aps(probabilities, labels)), rel=1e-12)
  assert abs(result['map'] - np.mean(sklearn_aps(logits, labels))) > 1e-4


@pytest.mark.filterwarnings('ignore:y_pred contains classes not in y_true')
def test_mean_class_accuracy_is_balanced_accuracy_over_present_classes(data):
  logits, labels = data
  labels = np.where(labels < 2, 0, labels)  # imbalanced: class 0 twice the others, class 1 absent too
  expected = skm.balanced_accuracy_score(labels, np.argmax(logits, axis=1))
  result = metrics.eval_metrics(logits, labels, np.zeros(len(labels)))
  assert result['mean_class_accuracy'] == pytest.approx(expected)


def test_top_k_match_sklearn_on_untied_logits(data):
  logits, labels = data
  result = metrics.eval_metrics(logits, labels, np.zeros(len(labels)))
  for k, name in ((1, 'top1'), (5, 'top5')):
    assert result[name] == pytest.approx(skm.top_k_accuracy_score(labels, logits, k=k, labels=range(NUM_CLASSES)))


def test_top_k_counts_a_tie_with_the_label_as_correct():
  logits = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [3.0, 2.0, 1.0]], np.float32)
  labels = np.array([1, 2, 2])  # tied for first, tied for second, plain third
  assert metrics.top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
  assert metrics.top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 3)


def test_top5_with_fewer_than_five_classes_is_one():
  logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], np.float32)
  assert metrics.eval_metrics(logits, np.array([0, 2]), np.zeros(2))['top5'] == 1.0


def test_eval_loss_is_the_mean_of_per_example_losses(data):
  logits, labels = data
  losses = np.linspace(0, 3, len(labels))
  assert metrics.eval_metrics(logits, labels, losses)['loss'] == pytest.approx(1.5)


def test_confusion_matrix_matches_sklearn(data):
  logits, labels = data
  predictions = np.argmax(logits, axis=1)
  matrix = metrics.confusion_matrix(predictions, labels, NUM_CLASSES)
  assert matrix.dtype == np.int64
  np.testing.assert_array_equal(matrix, skm.confusion_matrix(labels, predictions, labels=range(NUM_CLASSES)))


def test_class_report_matches_precision_recall_fscore_support(data):
  logits, labels = data
  logits[:, 5] -= 10  # class 5 is never predicted: its precision divides by zero
  predictions = np.argmax(logits, axis=1)
  report = metrics.class_report(logits, labels, [f'c{i}' for i in range(NUM_CLASSES)])
  rows = report['classes']
  expected = skm.precision_recall_fscore_support(labels, predictions, labels=range(NUM_CLASSES), zero_division=0)
  for key, values in zip(('precision', 'recall', 'f1', 'support'), expected):
    np.testing.assert_allclose([row[key] for row in rows], values, rtol=1e-12)
  assert [row['accuracy'] for row in rows] == [row['recall'] for row in rows]
  present = [c for c in range(NUM_CLASSES) if c != ABSENT]
  macro = skm.precision_recall_fscore_support(labels, predictions, labels=present, average='macro',
                                              zero_division=0)
  assert [report['macro'][key] for key in ('precision', 'recall', 'f1')] == pytest.approx(macro[:3])
  assert report['macro']['ap'] == pytest.approx(metrics.mean_average_precision(metrics.softmax(logits), labels))
  assert report['top1'] == pytest.approx(skm.accuracy_score(labels, predictions))
  assert report['confusion_matrix'] == metrics.confusion_matrix(predictions, labels, NUM_CLASSES).tolist()


def test_class_report_round_trips_through_strict_json(data):
  logits, labels = data
  report = metrics.class_report(logits, labels, [f'c{i}' for i in range(NUM_CLASSES)])
  assert report['classes'][ABSENT]['ap'] is None
  assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_report_text_names_every_class_on_aligned_lines():
  rng = np.random.default_rng(1)
  names = [f'Make {i} Model{" x" * (i % 13)}' for i in range(196)]
  text = metrics.report_text(metrics.class_report(rng.normal(size=(500, 196)), rng.integers(0, 196, 500), names))
  lines = [line for line in text.splitlines() if line]
  assert len({len(line) for line in lines}) == 1
  width = max(map(len, names))
  assert [line[:width].rstrip() for line in lines[1:197]] == names
  assert 'macro avg' in lines[-2] and 'top-1' in lines[-1]


@pytest.mark.parametrize('num_classes, side', [(10, 800), (196, 784), (1000, 1000)])
def test_confusion_image_fits_max_pixels_with_whole_pixel_cells(num_classes, side):
  image = metrics.confusion_image(np.ones((num_classes, num_classes), np.int64))
  assert image.dtype == np.uint8 and image.shape == (side, side, 3)


@pytest.mark.parametrize('num_classes', [10, 196])
def test_perfect_classifier_is_darkest_on_diagonal_blocks_and_white_elsewhere(num_classes):
  image = metrics.confusion_image(np.diag(np.arange(1, num_classes + 1)), grid=False)
  cell = image.shape[0] // num_classes
  diagonal = np.kron(np.eye(num_classes, dtype=bool), np.ones((cell, cell), bool))
  darkest, white = metrics.colour_map(np.array(1.0)), np.full(3, 255, np.uint8)
  assert (image[diagonal] == darkest).all() and (image[~diagonal] == white).all()
  assert darkest.sum() < 3 * 100


def test_confusion_image_colours_recall_not_counts():
  image = metrics.confusion_image(np.array([[2, 2], [0, 100]]), max_pixels=2)
  np.testing.assert_array_equal(image[0, 0], image[0, 1])
  np.testing.assert_array_equal(image[0, 0], metrics.colour_map(np.array(0.5)))
  np.testing.assert_array_equal(image[1, 1], metrics.colour_map(np.array(1.0)))


def test_confusion_image_grid_only_between_large_cells():
  grey = np.array([200, 200, 200], np.uint8)
  small = metrics.confusion_image(np.eye(196, dtype=np.int64))
  large = metrics.confusion_image(np.eye(10, dtype=np.int64))
  assert not (small == grey).all(axis=-1).any()
  assert (large[80] == grey).all() and (large[:, 80] == grey).all() and not (large[0] == grey).all()
