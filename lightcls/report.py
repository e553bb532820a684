"""Compare finished (or running) training runs: a table, overlaid curves, the examples they get wrong.

  python -m lightcls.report runs/a runs/b sweeps/lr --output=report [--curves=a --curves=b] [--sort=-lr]

A folder that is not itself a run (no config.json) stands for every run below it, e.g. a sweep's folder.
Writes into --output:
  report.md, report.csv, report.html  one row per run: config (model, data, optimizer, ...) and results
                                      (best losses and top-1, mAP, epochs, wall time); the HTML page is
                                      self-contained (figures inline) and sorts on a click on a header
  curves.png                          eval top-1, train and eval loss, and learning rate against epochs
  correctness.png                     runs x eval examples, dark where a run's best epoch gets it wrong,
                                      the examples ordered by how many runs get them wrong
  hard_examples.md, .json             the examples most runs get wrong, and the classes by mean error
It also writes TensorBoard's hparams experiment (the hyperparameters that differ between the runs or that the
table shows; eval top-1, loss and mAP as metrics) into the runs' common parent folder, so
`tensorboard --logdir=<that folder>` compares the runs in its HPARAMS tab.
"""
from __future__ import annotations

import base64
import collections
import csv
import dataclasses
import glob
import html
import json
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np
from absl import app, flags

from lightcls import cli, files, metrics as metrics_lib, writers

HPARAMS_METRICS = (('eval/top1', 'eval top-1'), ('eval/loss', 'eval loss'), ('eval/map', 'eval mAP'))
HPARAMS_SUFFIX = '.lightcls-report'  # marks the event file this command writes (and replaces) in a logdir


class ReportError(ValueError):
  """Input the report cannot be made from; the message names the path or value at fault."""


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run's workdir says about it."""
  name: str
  path: str
  config: dict[str, Any]
  summary: dict[str, Any] | None  # None while the run is unfinished
  rows: list[dict[str, Any]]      # metrics.jsonl

  def setting(self, key: str) -> Any:
    """The config value at a dotted key ('optimizer.lr'); None where the run's config has no such key (runs
    of older versions)."""
    value = self.config
    for part in key.split('.'):
      if not isinstance(value, dict) or part not in value:
        return None
      value = value[part]
    return value

  def epochs(self) -> list[dict[str, Any]]:
    """The rows written at each epoch's end, by epoch."""
    return sorted((row for row in self.rows if 'epoch' in row), key=lambda row: row['epoch'])

  def hparams(self) -> dict[str, Any]:
    """The hyperparameters the run gave TensorBoard (its first metrics row), or its flattened config."""
    for row in self.rows:
      if 'hparams' in row:
        return row['hparams']
    return writers.flat_hparams(self.config)


# Reading runs


def _read_rows(path: str) -> list[dict[str, Any]]:
  """metrics.jsonl's rows; a last line cut short (a run writing at this moment) is left out."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise ReportError(f'{path}, line {i + 1}: not JSON.') from None
  return rows


def is_run(path: str) -> bool:
  return os.path.isfile(os.path.join(path, 'config.json'))


def run_folders(paths: Sequence[str]) -> list[str]:
  """The run folders named, and those below each named folder that is not a run (sorted), each once."""
  if not paths:
    raise ReportError('Name at least one run folder (or a folder holding runs, such as a sweep\'s).')
  found: list[str] = []
  for path in paths:
    if not os.path.isdir(path):
      raise ReportError(f'{path}: no such folder.')
    if is_run(path):
      found.append(os.path.abspath(path))
      continue
    below = []
    for folder, subfolders, _ in os.walk(path):
      subfolders.sort()
      if is_run(folder):
        below.append(os.path.abspath(folder))
        subfolders.clear()  # a run's own folders (checkpoints, tensorboard) hold no runs
    if not below:
      raise ReportError(f'{path} is not a lightcls run (it has no config.json) and no folder below it is one.')
    found.extend(below)
  return list(dict.fromkeys(found))


def common_parent(folders: Sequence[str]) -> str:
  """The deepest folder holding all the runs (TensorBoard's logdir for them)."""
  return os.path.commonpath([os.path.dirname(folder) for folder in folders])


def read_runs(paths: Sequence[str]) -> list[Run]:
  """Every run named or found below `paths`, named by its path from the runs' common parent folder."""
  folders = run_folders(paths)
  parent = common_parent(folders)
  runs = []
  for folder in folders:
    summary_path = os.path.join(folder, 'summary.json')
    runs.append(Run(name=os.path.relpath(folder, parent), path=folder,
                    config=files.read_json(os.path.join(folder, 'config.json')),
                    summary=files.read_json(summary_path),
                    rows=_read_rows(os.path.join(folder, 'metrics.jsonl'))))
  return runs


# The table


def _best(run: Run, key: str, pick: Callable) -> float | None:
  values = [row[key] for row in run.epochs() if key in row]
  return pick(values) if values else None


def best_epoch(run: Run) -> dict[str, Any] | None:
  """The epoch row of the highest eval top-1 (the first of equals, as training keeps it)."""
  rows = [row for row in run.epochs() if 'eval/top1' in row]
  return max(rows, key=lambda row: row['eval/top1']) if rows else None


def learning_rate(run: Run) -> float | str | None:
  """The rate the run trained with: the one it found when the config says 'auto'."""
  return (run.summary or {}).get('lr', run.setting('optimizer.lr'))


def parameter_count(run: Run) -> int | None:
  return run.summary['params'] if run.summary else run.hparams().get('model.params')


def wall_seconds(run: Run) -> float | None:
  """Training time (evaluations included) from the summary; for an unfinished run, the time its rows span."""
  if run.summary:
    return run.summary['train_seconds']
  times = [row['time'] for row in run.rows if 'time' in row]
  return round(times[-1] - times[0], 1) if times else None


def normalization(run: Run) -> str:
  """'mean / std', one number per channel."""
  return ' / '.join(','.join(f'{v:g}' for v in run.setting(f'data.{key}') or ()) for key in ('mean', 'std'))


def augmentations(run: Run) -> str:
  """The per-image ops in order, then the batch-level ones that are on."""
  batch_level = [name for name in ('mixup', 'cutmix') if (run.setting(f'augment.{name}.alpha') or 0) > 0]
  return ', '.join([*(run.setting('augment.order') or ()), *batch_level])


def best_epoch_number(run: Run) -> int | None:
  row = best_epoch(run)
  return None if row is None else int(row['epoch'])  # metrics.jsonl stores every scalar as a float


def map_at_best(run: Run) -> float | None:
  return (best_epoch(run) or {}).get('eval/map')


def _number_text(value: Any) -> str:
  if value is None:
    return ''
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, int):
    return f'{value:,}'
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def duration_text(seconds: float | None) -> str:
  return '' if seconds is None else cli.duration(seconds)


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  value: Callable[[Run], Any]
  description: str
  text: Callable[[Any], str] = _number_text


# Seed 000's dashboard: identity, data, model, optimisation, then results.
COLUMNS = (
    Column('run', lambda run: run.name, 'the run folder, from the runs\' common parent'),
    Column('tags', lambda run: ', '.join(run.config.get('tags') or ()), 'config.tags'),
    Column('state', lambda run: 'finished' if run.summary else 'unfinished', 'unfinished: no summary.json yet'),
    Column('model', lambda run: run.setting('model.name'), 'model.name'),
    Column('width', lambda run: run.setting('model.width'), 'model.width'),
    Column('params', parameter_count, 'trained parameters'),
    Column('image_size', lambda run: run.setting('data.image_size'), 'data.image_size'),
    Column('batch_size', lambda run: run.setting('train.batch_size'), 'train.batch_size'),
    Column('grayscale', lambda run: run.setting('data.grayscale'), 'data.grayscale'),
    Column('normalization', normalization, 'data.mean / data.std'),
    Column('augmentations', augmentations, 'augment.order, then mixup/cutmix if on'),
    Column('bbox', lambda run: run.setting('data.crop_to_boxes'), 'data.crop_to_boxes'),
    Column('loss', lambda run: run.setting('loss.name'), 'loss.name'),
    Column('label_smoothing', lambda run: run.setting('loss.label_smoothing'), 'loss.label_smoothing'),
    Column('optimizer', lambda run: run.setting('optimizer.name'), 'optimizer.name'),
    Column('lr', learning_rate, 'optimizer.lr (the one found, for lr=auto)'),
    Column('weight_decay', lambda run: run.setting('optimizer.weight_decay'), 'optimizer.weight_decay'),
    Column('schedule', lambda run: run.setting('schedule.name'), 'schedule.name'),
    Column('dropout', lambda run: run.setting('model.dropout'), 'model.dropout (empty: the architecture\'s)'),
    Column('head_width', lambda run: run.setting('model.head_features'),
           'model.head_features (empty: the architecture\'s)'),
    Column('epochs', lambda run: len(run.epochs()), 'epochs trained and evaluated'),
    Column('stop_reason', lambda run: (run.summary or {}).get('stop_reason'), 'why it stopped early, if it did'),
    Column('best_train_loss', lambda run: _best(run, 'train/epoch_loss', min), 'lowest mean training loss of an epoch'),
    Column('best_val_loss', lambda run: _best(run, 'eval/loss', min), 'lowest eval loss of an epoch'),
    Column('best_train_top1', lambda run: _best(run, 'train/epoch_top1', max), 'highest training top-1 of an epoch'),
    Column('best_val_top1', lambda run: _best(run, 'eval/top1', max), 'highest eval top-1 of an epoch'),
    Column('best_epoch', best_epoch_number, 'the epoch of the highest eval top-1 (its checkpoint is kept)'),
    Column('val_map', map_at_best, 'eval mAP at the best epoch'),
    Column('wall_time', wall_seconds, 'seconds of training and evaluation', duration_text),
)
COLUMN_NAMES = tuple(column.name for column in COLUMNS)


def table(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """One row per run: {column name: value}, values as read (None where a run has none)."""
  return [{column.name: column.value(run) for column in COLUMNS} for run in runs]


def _sort_key(value: Any) -> tuple:
  """Numbers before text (a column may hold both: lr 'auto' of an unfinished run)."""
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


def sorted_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
  """`rows` by the column `sort` names ('-name': descending), empty values last; '' keeps the order."""
  if not sort:
    return rows
  name = sort.lstrip('-')
  if name not in COLUMN_NAMES:
    raise ReportError(f'--sort={sort!r}: no such column; choose one of {", ".join(COLUMN_NAMES)} (- before it: '
                      'descending).')
  present = [row for row in rows if row[name] is not None and row[name] != '']
  empty = [row for row in rows if row[name] is None or row[name] == '']
  return sorted(present, key=lambda row: _sort_key(row[name]), reverse=sort.startswith('-')) + empty


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  def cell(column: Column, value: Any) -> str:
    return column.text(value).replace('|', '\\|')
  lines = ['| ' + ' | '.join(COLUMN_NAMES) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(cell(column, row[column.name]) for column in COLUMNS) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
  """Raw values (full precision, seconds, True/False), empty where None."""
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, COLUMN_NAMES)
    writer.writeheader()
    writer.writerows({k: '' if v is None else v for k, v in row.items()} for row in rows)


# Hard examples: the eval predictions of each run's best epoch, compared example by example.


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The best-epoch predictions of the runs that share one eval set."""
  runs: list[str]           # names, in table order
  predictions: np.ndarray   # (runs, examples) predicted class
  labels: np.ndarray        # (examples,)
  class_names: list[str]
  notes: list[str]          # runs left out, and why


def _class_names(run: Run, num_classes: int) -> list[str]:
  path = os.path.join(run.path, 'class_report_best.json')
  if os.path.exists(path):
    return [row['name'] for row in files.read_json(path)['classes']]
  return [str(c) for c in range(num_classes)]


def shared_predictions(runs: Sequence[Run]) -> Predictions | None:
  """The predictions of the runs evaluated on the eval set most of them share (that of the earliest run among
  equals); None if no run has any. Runs without predictions_best.npz, or on another eval set, are noted."""
  loaded, notes = {}, []
  for run in runs:
    path = os.path.join(run.path, 'predictions_best.npz')
    if os.path.exists(path):
      with np.load(path) as data:
        loaded[run.name] = (data['predictions'], data['labels'])
    else:
      notes.append(f'{run.name}: no predictions_best.npz (no epoch evaluated yet, or a run of an older version).')
  if not loaded:
    return None
  label_sets = [labels.tobytes() + str(labels.shape).encode() for _, labels in loaded.values()]
  majority = collections.Counter(label_sets).most_common(1)[0][0]
  kept = [name for name, key in zip(loaded, label_sets) if key == majority]
  notes += [f'{name}: evaluated on another eval set (other labels) than {kept[0]}; left out of the hard '
            'examples.' for name, key in zip(loaded, label_sets) if key != majority]
  labels = loaded[kept[0]][1]
  predictions = np.stack([loaded[name][0] for name in kept])
  num_classes = int(max(labels.max(), predictions.max())) + 1
  first = next(run for run in runs if run.name == kept[0])
  return Predictions(kept, predictions, labels, _class_names(first, num_classes), notes)


def wrong(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """bool (runs, examples): True where a run gets the example wrong."""
  return predictions != labels[None]


def example_order(mistakes: np.ndarray) -> np.ndarray:
  """Example indices by the number of runs that get them wrong, most first; among equals, those the first run
  gets wrong first, then by the second run, ... (so the picture shows blocks, not noise), then by index."""
  # np.lexsort is stable and sorts by its last key first.
  return np.lexsort([*(~mistakes[::-1]), -mistakes.sum(axis=0)])


def hard_examples(shared: Predictions) -> list[dict[str, Any]]:
  """The examples more than half of the runs get wrong, most-missed first: index in the eval split, true
  class, fraction of runs wrong, and the wrong class predicted most often (the lowest among equals)."""
  mistakes = wrong(shared.predictions, shared.labels)
  fraction = mistakes.mean(axis=0)
  examples = []
  for i in example_order(mistakes):
    if fraction[i] <= 0.5:
      break
    counts = np.bincount(shared.predictions[mistakes[:, i], i], minlength=len(shared.class_names))
    examples.append({'index': int(i), 'class': shared.class_names[shared.labels[i]],
                     'runs_wrong': float(fraction[i]), 'predicted': shared.class_names[int(np.argmax(counts))],
                     'predicted_by': int(counts.max())})
  return examples


def hard_classes(shared: Predictions) -> list[dict[str, Any]]:
  """Every class with eval examples, by its error (1 - recall) averaged over the runs, highest first: with
  its examples and how many of them no run gets right."""
  num_classes = len(shared.class_names)
  errors = np.mean([1 - metrics_lib.class_recalls(p, shared.labels, num_classes) for p in shared.predictions], 0)
  never_right = np.bincount(shared.labels[wrong(shared.predictions, shared.labels).all(axis=0)],
                            minlength=num_classes)
  support = np.bincount(shared.labels, minlength=num_classes)
  classes = [{'class': shared.class_names[c], 'examples': int(support[c]), 'mean_error': float(errors[c]),
              'never_right': int(never_right[c])} for c in np.flatnonzero(support)]
  return sorted(classes, key=lambda row: -row['mean_error'])


# Figures (matplotlib, imported only when drawing)


def figure_class() -> type:
  """matplotlib's Figure: drawn without pyplot, so no backend is chosen or changed (a notebook keeps its own)."""
  try:
    from matplotlib.figure import Figure
  except ImportError:
    raise ReportError('The report\'s figures need matplotlib (a requirement of lightcls, missing from this '
                      'environment): pip install matplotlib') from None
  return Figure


def curve_runs(runs: Sequence[Run], names: Sequence[str] | None) -> list[Run]:
  """The runs named (as the table names them), or all of them for None."""
  if not names:
    return list(runs)
  by_name = {run.name: run for run in runs}
  unknown = [name for name in names if name not in by_name]
  if unknown:
    raise ReportError(f'--curves: no run named {", ".join(map(repr, unknown))}; the runs are '
                      f'{", ".join(map(repr, by_name))}.')
  return [by_name[name] for name in names]


def steps_per_epoch(run: Run) -> float | None:
  """From the first epoch row (a full epoch unless the whole run is shorter)."""
  epochs = run.epochs()
  return epochs[0]['step'] / epochs[0]['epoch'] if epochs else None


def write_curves(runs: Sequence[Run], path: str) -> None:
  """Eval top-1; eval (solid) and train (dashed) loss; learning rate at each train log (log scale): all
  against epochs, one colour per run."""
  figure = figure_class()(figsize=(16, 4.8), layout='constrained')
  top1, loss, rate = figure.subplots(1, 3)
  rates = []
  for i, run in enumerate(runs):
    colour, epochs = f'C{i % 10}', run.epochs()
    x = [row['epoch'] for row in epochs]
    top1.plot(x, [row.get('eval/top1') for row in epochs], '.-', color=colour, label=run.name)
    loss.plot(x, [row.get('eval/loss') for row in epochs], '.-', color=colour)
    loss.plot(x, [row.get('train/epoch_loss') for row in epochs], '--', color=colour)
    per_epoch = steps_per_epoch(run)
    logged = [row for row in run.rows if 'train/learning_rate' in row]
    if per_epoch and logged:
      values = [row['train/learning_rate'] for row in logged]
      rate.plot([row['step'] / per_epoch for row in logged], values, color=colour)
      rates += values
  for axes, title in ((top1, 'eval top-1'), (loss, 'loss (eval solid, train dashed)'), (rate, 'learning rate')):
    axes.set_title(title)
    axes.set_xlabel('epoch')
    axes.grid(alpha=0.3)
  if rates and min(rates) > 0:  # (a cosine schedule may end at 0)
    rate.set_yscale('log')
  top1.legend(fontsize='small')
  figure.savefig(path, dpi=100)


def write_correctness(shared: Predictions, path: str) -> None:
  """A runs x examples picture (seed 001's §7): dark blue where a run gets an example wrong, the examples
  ordered by how many runs get them wrong, so examples every run misses form the dark band on the left."""
  mistakes = wrong(shared.predictions, shared.labels)
  image = metrics_lib.colour_map(mistakes[:, example_order(mistakes)].astype(np.float64))
  figure = figure_class()(figsize=(12, 1.2 + 0.3 * len(shared.runs)), layout='constrained')
  axes = figure.subplots()
  axes.imshow(image, aspect='auto', interpolation='antialiased')
  axes.set_yticks(range(len(shared.runs)), shared.runs, fontsize='small')
  axes.set_xlabel(f'the {mistakes.shape[1]} eval examples, by the number of runs that get them wrong')
  axes.set_title('wrong (dark) and right (white) at each run\'s best epoch')
  figure.savefig(path, dpi=100)


# TensorBoard


def hparam_domains(runs: Sequence[Run]) -> dict[str, list[Any]]:
  """{hparam: its sorted values} for those that differ between the runs and those the table shows."""
  values: dict[str, set] = collections.defaultdict(set)
  for run in runs:
    for key, value in run.hparams().items():
      values[key].add(value)
  shown = {'model.name', 'model.width', 'model.params', 'data.image_size', 'train.batch_size', 'loss.name',
           'optimizer.name', 'optimizer.lr', 'optimizer.weight_decay', 'schedule.name'}
  return {key: sorted(found, key=_sort_key) for key, found in sorted(values.items())
          if len(found) > 1 or key in shown}


def _hparam(name: str, values: list[Any]):
  """A TensorBoard HParam with a discrete domain when all its values have one type (else TensorBoard infers
  one: a key can hold 'None' in one run and a number in another)."""
  from tensorboard.plugins.hparams import summary_v2 as hp
  kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
  if len(kinds) != 1:
    return hp.HParam(name)
  kind = kinds.pop()
  return hp.HParam(name, hp.Discrete([kind(v) for v in values], dtype=kind))


def write_hparams_experiment(runs: Sequence[Run], logdir: str) -> str:
  """TensorBoard's hparams experiment for the runs (each wrote its own session start), in an event file of
  `logdir` that replaces the one an earlier report wrote there. Returns its path."""
  from tensorboard.plugins.hparams import summary_v2 as hp
  pattern = os.path.join(logdir, f'events.out.tfevents.*{HPARAMS_SUFFIX}')
  for old in glob.glob(pattern):
    os.remove(old)  # TensorBoard would take whichever experiment it read first
  summary = hp.hparams_config_pb([_hparam(k, v) for k, v in hparam_domains(runs).items()],
                                 [hp.Metric(tag, display_name=name) for tag, name in HPARAMS_METRICS])
  writer = writers.EventWriter(logdir, HPARAMS_SUFFIX)
  writer.write_summary(0, summary)
  writer.close()
  return writer.path


# The pages


def _png_data(path: str) -> str:
  with open(path, 'rb') as f:
    return 'data:image/png;base64,' + base64.b64encode(f.read()).decode()


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


SORT_SCRIPT = """
(function () {
  var table = document.getElementById('runs');
  var body = table.tBodies[0];
  function sortBy(header, descending) {
    var index = header.cellIndex, numeric = header.getAttribute('data-numeric') === 'yes';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].getAttribute('data-value'), y = b.cells[index].getAttribute('data-value');
      if (x === '' || y === '') { return (x === '') - (y === ''); }  // empty cells last either way
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) { cell.removeAttribute('aria-sort'); });
    header.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    table.setAttribute('data-sorted-by', (descending ? '-' : '') + header.getAttribute('data-column'));
  }
  function byName(sort) {
    var name = sort.replace(/^-/, '');
    var header = table.querySelector('th[data-column="' + name + '"]');
    if (header) { sortBy(header, sort.charAt(0) === '-'); }
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
    header.addEventListener('click', function () {
      sortBy(header, header.getAttribute('aria-sort') === 'ascending');
    });
  });
  var hash = /^#sort=(.+)$/.exec(window.location.hash);  // report.html#sort=-lr opens sorted so
  byName(hash ? decodeURIComponent(hash[1]) : table.getAttribute('data-sort'));
})();
"""

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
#runs th { cursor: pointer; background: #eef3f8; }
#runs th:first-child, #runs td:first-child { position: sticky; left: 0; background: #eef3f8; }
#runs th[aria-sort=ascending]::after { content: ' \\25B2'; }
#runs th[aria-sort=descending]::after { content: ' \\25BC'; }
#runs tbody tr:nth-child(even) { background: #f8f8f8; }
img { max-width: 100%; }
.note { color: #a33; }
"""


def _html_table(rows: Sequence[dict[str, Any]], sort: str) -> str:
  numeric = {c.name for c in COLUMNS if any(_is_number(row[c.name]) for row in rows)
             and all(_is_number(row[c.name]) or row[c.name] is None for row in rows)}
  head = ''.join(f'<th data-column="{c.name}" data-numeric="{"yes" if c.name in numeric else "no"}" '
                 f'title="{html.escape(c.description)}">{c.name}</th>' for c in COLUMNS)

  def cell(column: Column, value: Any) -> str:
    raw = '' if value is None else repr(value) if _is_number(value) else column.text(value)
    kind = ' class="number"' if column.name in numeric else ''
    return f'<td data-value="{html.escape(raw)}"{kind}>{html.escape(column.text(value))}</td>'
  body = '\n'.join('<tr>' + ''.join(cell(c, row[c.name]) for c in COLUMNS) + '</tr>' for row in rows)
  return (f'<div class="scroll"><table id="runs" data-sort="{html.escape(sort)}">\n<thead><tr>{head}</tr></thead>\n'
          f'<tbody>\n{body}\n</tbody>\n</table></div>')


def _plain_html_table(rows: Sequence[dict[str, Any]]) -> str:
  if not rows:
    return ''
  head = ''.join(f'<th>{html.escape(key)}</th>' for key in rows[0])
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(_number_text(v))}</td>' for v in row.values()) + '</tr>'
                 for row in rows)
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_page(rows: Sequence[dict[str, Any]], sort: str, output: str, hard: dict[str, Any] | None,
              top: int) -> str:
  """The whole report as one page with no outside references: inline style, script and figures."""
  parts = [f'<h1>{len(rows)} training runs</h1>',
           '<p>Click a column header to sort by it (again: the other way).</p>', _html_table(rows, sort),
           '<h2>Curves</h2>', f'<img alt="curves" src="{_png_data(os.path.join(output, "curves.png"))}">']
  if hard:
    parts += ['<h2>Hard examples</h2>',
              *(f'<p class="note">{html.escape(note)}</p>' for note in hard['notes']),
              f'<img alt="correctness" src="{_png_data(os.path.join(output, "correctness.png"))}">',
              f'<h3>Examples more than half of the runs get wrong (first {top})</h3>',
              _plain_html_table(hard['examples'][:top]) or '<p>None.</p>',
              f'<h3>Classes by mean error over the runs (first {top})</h3>', _plain_html_table(hard['classes'][:top])]
  return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>lightcls report</title>\n'
          f'<style>{STYLE}</style>\n</head>\n<body>\n' + '\n'.join(parts) +
          f'\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n')


def markdown_page(rows: Sequence[dict[str, Any]], sort: str, hard: dict[str, Any] | None) -> str:
  unfinished = sum(row['state'] == 'unfinished' for row in rows)
  lines = [f'# {len(rows)} training runs ({unfinished} unfinished)', '']
  if sort:
    lines += [f'Sorted by {sort} (- : descending).', '']
  lines += [markdown_table(rows), '![curves](curves.png)', '']
  if hard:
    lines += ['![correctness](correctness.png)', '', 'Hard examples: [hard_examples.md](hard_examples.md).', '']
  lines += ['Columns:', '', *(f'- `{c.name}`: {c.description}' for c in COLUMNS)]
  return '\n'.join(lines) + '\n'


def _markdown_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
  if not rows:
    return ['None.']
  keys = list(rows[0])
  return ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys),
          *('| ' + ' | '.join(_number_text(row[k]) for k in keys) + ' |' for row in rows)]


def hard_examples_page(hard: dict[str, Any], top: int) -> str:
  return '\n'.join([
      '# Hard examples', '', f'Runs compared: {", ".join(hard["runs"])} (their best epochs).', '',
      *(f'- {note}' for note in hard['notes']), '', '![correctness](correctness.png)', '',
      f'## Examples more than half of the runs get wrong ({len(hard["examples"])}; the first {top})', '',
      'index: position in the eval split; predicted: the wrong class predicted most often, by `predicted_by` runs.',
      '', *_markdown_rows(hard['examples'][:top]), '',
      f'## Classes by mean error over the runs (the first {top})', '',
      'never_right: examples of the class that no run gets right.', '', *_markdown_rows(hard['classes'][:top]),
  ]) + '\n'


def _write(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)


def write_report(paths: Sequence[str], output: str, curves: Sequence[str] | None = None,
                 sort: str = '-best_val_top1', top: int = 20, tensorboard: bool = True) -> dict[str, Any]:
  """Writes the report of the runs in `paths` into `output` (the curves of the runs named in `curves`, or of
  all); returns {'files': [...], 'notes': [...]}."""
  runs = read_runs(paths)
  rows = sorted_rows(table(runs), sort)
  order = {row['run']: i for i, row in enumerate(rows)}
  runs = sorted(runs, key=lambda run: order[run.name])  # the figures list runs as the table does
  plotted = curve_runs(runs, curves)
  figure_class()  # fail on a missing matplotlib before writing anything
  os.makedirs(output, exist_ok=True)

  def path(name: str) -> str:
    return os.path.join(output, name)
  write_csv(rows, path('report.csv'))
  write_curves(plotted, path('curves.png'))
  files, notes, hard = ['report.md', 'report.csv', 'report.html', 'curves.png'], [], None
  shared = shared_predictions(runs)
  if shared:
    hard = {'runs': shared.runs, 'notes': shared.notes, 'examples': hard_examples(shared),
            'classes': hard_classes(shared)}
    write_correctness(shared, path('correctness.png'))
    _write(path('hard_examples.json'), json.dumps(hard, indent=1))
    _write(path('hard_examples.md'), hard_examples_page(hard, top))
    files += ['correctness.png', 'hard_examples.md', 'hard_examples.json']
    notes += shared.notes
  else:
    notes.append('No run has predictions_best.npz: no hard-example analysis.')
  _write(path('report.md'), markdown_page(rows, sort, hard))
  _write(path('report.html'), html_page(rows, sort, output, hard, top))
  files = [path(name) for name in files]
  if tensorboard:
    logdir = common_parent([run.path for run in runs])
    try:
      files.append(write_hparams_experiment(runs, logdir))
      notes.append(f'tensorboard --logdir={logdir} compares the runs in its HPARAMS tab.')
    except OSError as error:
      notes.append(f'TensorBoard\'s hparams experiment not written into {logdir}: {error}')
  return {'files': files, 'notes': notes}


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('output', 'report', 'Folder to write the report into.')
  # Repeated rather than comma-separated: sweep run names hold commas ('lr=0.001,weight_decay=0.1').
  flags.DEFINE_multi_string('curves', None, 'A run whose curves are drawn, named as the table names it; repeat '
                            'the flag for more (default: all runs).')
  flags.DEFINE_string('sort', '-best_val_top1', 'The column the table is sorted by; -name: descending; empty: '
                      'the order the runs were named in.')
  flags.DEFINE_integer('top', 20, 'Hard examples and classes listed in the pages (the JSON has all).')
  flags.DEFINE_bool('tensorboard', True, 'Write TensorBoard\'s hparams experiment into the runs\' common parent '
                    'folder.')


def main(argv: list[str]) -> None:
  if not argv[1:]:
    raise app.UsageError('Name run folders (or folders holding runs) after the flags.')
  try:
    written = write_report(argv[1:], FLAGS.output, FLAGS.curves, FLAGS.sort, FLAGS.top, FLAGS.tensorboard)
  except ReportError as error:
    sys.exit(f'lightcls.report: {error}')
  for note in written['notes']:
    print(note)
  print('Wrote', ', '.join(written['files']))


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # tensorboard's event writer imports TensorFlow if present
  define_flags()
  app.run(main)
