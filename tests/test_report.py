"""python -m lightcls.report: the comparison table read back against the runs' own files, the HTML page in
headless Chromium, the hard examples against a brute-force count, the curves, and TensorBoard's hparams view.

The Chromium screenshot is kept as a test artifact in $LIGHTCLS_TEST_ARTIFACTS (default: test-artifacts/ in the
repository, ignored by git).
"""
import collections
import csv
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lightcls import report
from tests.helpers import REPO, digits_subset, small_config

LEARNING_RATES = {'a': 2e-3, 'b': 1e-3, 'c': 5e-3}


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """Three two-epoch runs of the suite's small config in one folder, differing in learning rate and seed.
  The linear model: its programs compile in a second, where GhostNet's take seconds even from the cache."""
  from lightcls import train
  folder = tmp_path_factory.mktemp('runs') / 'sweep'
  dataset = digits_subset()
  for seed, (name, lr) in enumerate(LEARNING_RATES.items()):
    config = small_config(**{'train.total_steps': 8, 'optimizer.lr': lr, 'model.name': 'linear'})
    config.seed, config.tags = seed, ('sweep', name)
    train.train_and_evaluate(config, str(folder / name), dataset=dataset)
  return folder


@pytest.fixture(scope='module')
def made(sweep):
  """The report of the sweep folder, made by the command line (curves of two runs)."""
  output = sweep.parent / 'report'
  done = subprocess.run([sys.executable, '-m', 'lightcls.report', str(sweep), f'--output={output}', '--curves=a',
                         '--curves=c'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return output


def read_json(path):
  with open(path) as f:
    return json.load(f)


def expected_row(workdir):
  """A run's table row, read here from its config.json, summary.json and metrics.jsonl."""
  config, summary = read_json(workdir / 'config.json'), read_json(workdir / 'summary.json')
  with open(workdir / 'metrics.jsonl') as f:
    epochs = [row for row in map(json.loads, f) if 'epoch' in row]
  best = epochs[summary['best_epoch'] - 1]
  return {
      'run': workdir.name, 'tags': ', '.join(config['tags']), 'state': 'finished',
      'model': config['model']['name'], 'width': config['model']['width'], 'params': summary['params'],
      'image_size': config['data']['image_size'], 'batch_size': config['train']['batch_size'],
      'grayscale': config['data']['grayscale'],
      'normalization': f'{config["data"]["mean"][0]} / {config["data"]["std"][0]}',
      'augmentations': ', '.join(config['augment']['order']), 'bbox': config['data']['crop_to_boxes'],
      'loss': config['loss']['name'], 'label_smoothing': config['loss']['label_smoothing'],
      'optimizer': config['optimizer']['name'], 'lr': config['optimizer']['lr'],
      'weight_decay': config['optimizer']['weight_decay'], 'schedule': config['schedule']['name'],
      'dropout': config['model']['dropout'], 'head_width': config['model']['head_features'],
      'epochs': summary['epochs'], 'stop_reason': summary['stop_reason'],
      'best_train_loss': min(row['train/epoch_loss'] for row in epochs),
      'best_val_loss': min(row['eval/loss'] for row in epochs),
      'best_train_top1': max(row['train/epoch_top1'] for row in epochs),
      'best_val_top1': summary['best_top1'], 'best_epoch': summary['best_epoch'], 'val_map': best['eval/map'],
      'wall_time': summary['train_seconds'],
  }


def parsed(cell):
  """A CSV cell as the value it was written from."""
  if cell in ('', 'True', 'False'):
    return {'': None, 'True': True, 'False': False}[cell]
  for kind in (int, float):
    try:
      return kind(cell)
    except ValueError:
      pass
  return cell


class Table(html.parser.HTMLParser):
  """The #runs table of a page: its attributes and each body row's cells' data-value."""

  def __init__(self):
    super().__init__()
    self.attributes, self.rows, self._in_runs = {}, [], False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'table' and attrs.get('id') == 'runs':
      self.attributes, self._in_runs = attrs, True
    elif tag == 'td' and self._in_runs:
      self.rows[-1].append(attrs['data-value'])
    elif tag == 'tr' and self._in_runs:
      self.rows.append([])

  def handle_endtag(self, tag):
    if tag == 'table':
      self._in_runs = False
    elif tag == 'thead' and self._in_runs:
      self.rows.pop()  # the header row


def test_the_table_has_every_column_with_the_values_read_from_each_runs_files(sweep, made):
  expected = {name: expected_row(sweep / name) for name in LEARNING_RATES}
  assert all(list(row) == list(report.COLUMN_NAMES) for row in expected.values())  # each column checked
  with open(made / 'report.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [row['run'] for row in rows] == sorted(expected, key=lambda n: -expected[n]['best_val_top1'])
  for row in rows:
    assert {k: parsed(v) for k, v in row.items()} == expected[row['run']]
  page = Table()
  page.feed((made / 'report.html').read_text())
  assert page.rows == [[{'True': 'yes', 'False': 'no'}.get(v, v) for v in row.values()] for row in rows]

  markdown = (made / 'report.md').read_text()
  header = '| ' + ' | '.join(report.COLUMN_NAMES) + ' |'
  assert header in markdown
  for name, row in expected.items():
    cells = [column.text(row[column.name]) for column in report.COLUMNS]
    assert '| ' + ' | '.join(cells) + ' |' in markdown, name


def test_an_unfinished_run_is_marked_and_reported_from_its_metrics(sweep, tmp_path):
  running = tmp_path / 'running'
  shutil.copytree(sweep / 'a', running)
  summary = read_json(running / 'summary.json')
  os.remove(running / 'summary.json')
  with open(running / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  with open(running / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 9, "ti')  # a line the run is writing at this moment

  (row,) = report.table(report.read_runs([str(running)]))
  assert row['state'] == 'unfinished' and row['stop_reason'] is None
  assert row['params'] == summary['params'] and row['lr'] == LEARNING_RATES['a']
  assert row['epochs'] == 2 and row['best_val_top1'] == summary['best_top1']
  assert row['wall_time'] == pytest.approx(rows[-1]['time'] - rows[0]['time'], abs=0.05)


def chromium():
  return next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None)


def run_chromium(*args):
  """Headless Chromium's output, with its console (page errors show as 'Uncaught ...') in stderr."""
  command = [chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
             '--disable-component-update', '--no-first-run', '--enable-logging=stderr', '--v=0', *args]
  done = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Uncaught' not in done.stderr, done.stderr[-3000:]
  return done.stdout


@pytest.mark.skipif(chromium() is None, reason='needs headless Chromium (apt-get install chromium); CI has it')
def test_the_html_page_opens_in_headless_chromium_without_errors_and_sorts_by_a_column(made, tmp_path):
  page = (made / 'report.html').read_text()
  assert not re.search(r'(src|href)="(?!data:|#)', page)  # self-contained: nothing fetched
  url = (made / 'report.html').as_uri()
  artifacts = os.environ.get('LIGHTCLS_TEST_ARTIFACTS', os.path.join(REPO, 'test-artifacts'))
  os.makedirs(artifacts, exist_ok=True)
  screenshot = os.path.join(artifacts, 'report.png')
  run_chromium(f'--screenshot={screenshot}', '--window-size=1400,900', url)
  assert Image.open(screenshot).size == (1400, 900)

  as_written = Table()
  as_written.feed(page)
  lr = report.COLUMN_NAMES.index('lr')
  for sort in ('lr', '-lr'):
    table = Table()
    table.feed(run_chromium('--dump-dom', f'{url}#sort={sort}'))
    assert table.attributes['data-sorted-by'] == sort  # the script ran
    rates = [float(row[lr]) for row in table.rows]
    assert rates == sorted(LEARNING_RATES.values(), reverse=sort.startswith('-'))
    assert sorted(table.rows) == sorted(as_written.rows)


def brute_force_order(mistakes):
  runs, examples = mistakes.shape
  return sorted(range(examples), key=lambda i: (-sum(mistakes[r][i] for r in range(runs)),
                                                [not mistakes[r][i] for r in range(runs)], i))


def brute_force_hard_examples(predictions, labels, names):
  runs, examples = predictions.shape
  mistakes = [[predictions[r][i] != labels[i] for i in range(examples)] for r in range(runs)]
  found = []
  for i in brute_force_order(np.array(mistakes)):
    wrong_predictions = [int(predictions[r][i]) for r in range(runs) if mistakes[r][i]]
    if len(wrong_predictions) / runs > 0.5:
      counts = collections.Counter(wrong_predictions)
      most = max(counts, key=lambda c: (counts[c], -c))
      found.append({'index': i, 'class': names[labels[i]], 'runs_wrong': len(wrong_predictions) / runs,
                    'predicted': names[most], 'predicted_by': counts[most]})
  return found


def brute_force_hard_classes(predictions, labels, names):
  classes = []
  for c, name in enumerate(names):
    members = [i for i in range(len(labels)) if labels[i] == c]
    if members:
      errors = [sum(p[i] != c for i in members) / len(members) for p in predictions]
      never_right = sum(all(p[i] != c for p in predictions) for i in members)
      classes.append({'class': name, 'examples': len(members), 'mean_error': sum(errors) / len(errors),
                      'never_right': never_right})
  return sorted(classes, key=lambda row: -row['mean_error'])


def assert_same_records(found, expected):
  assert len(found) == len(expected)
  for row, want in zip(found, expected):
    assert row == pytest.approx(want)


def test_hard_examples_and_classes_of_the_runs_match_a_brute_force_count(sweep, made):
  hard = read_json(made / 'hard_examples.json')
  with open(made / 'report.csv', newline='') as f:
    assert hard['runs'] == [row['run'] for row in csv.DictReader(f)] and not hard['notes']
  loaded = [np.load(sweep / name / 'predictions_best.npz') for name in hard['runs']]
  predictions, labels = np.stack([d['predictions'] for d in loaded]), loaded[0]['labels']
  names = [row['name'] for row in read_json(sweep / 'a' / 'class_report_best.json')['classes']]
  assert_same_records(hard['examples'], brute_force_hard_examples(predictions, labels, names))
  assert_same_records(hard['classes'], brute_force_hard_classes(predictions, labels, names))
  assert (made / 'hard_examples.md').read_text().startswith('# Hard examples')
  assert Image.open(made / 'correctness.png').format == 'PNG'


def test_correctness_order_and_hard_examples_match_a_brute_force_count_with_many_ties():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300)
  predictions = np.where(rng.random((6, 300)) < 0.5, labels, rng.integers(0, 4, (6, 300)))
  names = ['w', 'x', 'y', 'z']
  shared = report.Predictions([f'r{i}' for i in range(6)], predictions, labels, names, [])
  mistakes = report.wrong(predictions, labels)
  np.testing.assert_array_equal(mistakes, [[p != l for p, l in zip(row, labels)] for row in predictions])
  assert report.example_order(mistakes).tolist() == brute_force_order(mistakes)
  assert_same_records(report.hard_examples(shared), brute_force_hard_examples(predictions, labels, names))
  assert_same_records(report.hard_classes(shared), brute_force_hard_classes(predictions, labels, names))


def test_a_run_on_another_eval_set_is_left_out_of_the_hard_examples_with_a_note(sweep, tmp_path):
  other = tmp_path / 'other'
  shutil.copytree(sweep / 'b', other)
  with np.load(other / 'predictions_best.npz') as data:
    np.savez(other / 'predictions_best.npz', predictions=data['predictions'], labels=data['labels'][::-1])
  written = report.write_report([str(sweep), str(other)], str(tmp_path / 'report'), tensorboard=False)
  hard = read_json(tmp_path / 'report' / 'hard_examples.json')
  assert sorted(os.path.basename(name) for name in hard['runs']) == ['a', 'b', 'c']  # 'other' left out
  assert any('other: evaluated on another eval set' in note for note in written['notes'])
  assert 'other' in (tmp_path / 'report' / 'report.csv').read_text()  # still in the table


def test_curves_are_a_png_of_sensible_size_for_the_runs_chosen(sweep, made, tmp_path):
  image = Image.open(made / 'curves.png')
  assert image.format == 'PNG' and 1000 <= image.width <= 3000 and 300 <= image.height <= 1500
  report.write_report([str(sweep)], str(tmp_path), tensorboard=False)  # all runs
  assert Image.open(tmp_path / 'curves.png').size == image.size
  with pytest.raises(report.ReportError, match="no run named 'z'; the runs are '"):
    report.write_report([str(sweep)], str(tmp_path), curves=['a', 'z'], tensorboard=False)


def test_tensorboard_hparams_view_lists_each_run_with_its_learning_rate_and_eval_metrics(sweep, made, tmp_path):
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
  from tensorboard.plugins import base_plugin
  from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

  report.write_report([str(sweep)], str(tmp_path), tensorboard=True)  # again: replaces the experiment
  assert len([f for f in os.listdir(sweep) if f.endswith(report.HPARAMS_SUFFIX)]) == 1
  logdir = str(sweep)  # what `tensorboard --logdir` is given
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  plugin = backend_context.Context(base_plugin.TBContext(
      logdir=logdir, multiplexer=multiplexer, data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
  request = context.RequestContext()

  experiment = get_experiment.Handler(request, plugin, '', api_pb2.GetExperimentRequest()).run()
  assert [m.name.tag for m in experiment.metric_infos] == ['eval/top1', 'eval/loss', 'eval/map']
  domains = {h.name: [v.number_value for v in h.domain_discrete.values] for h in experiment.hparam_infos}
  assert domains['optimizer.lr'] == pytest.approx(sorted(LEARNING_RATES.values()))
  assert domains['seed'] == [0, 1, 2]

  groups = list_session_groups.Handler(request, plugin, '', api_pb2.ListSessionGroupsRequest(
      start_index=0, slice_size=10, allowed_statuses=list(api_pb2.Status.values()))).run().session_groups
  found = {g.sessions[0].name: (g.hparams['optimizer.lr'].number_value,
                                {m.name.tag: m.value for m in g.metric_values}) for g in groups}
  assert sorted(found) == [f'{name}/tensorboard' for name in LEARNING_RATES]
  for name, lr in LEARNING_RATES.items():
    with open(sweep / name / 'metrics.jsonl') as f:
      last = [row for row in map(json.loads, f) if 'epoch' in row][-1]
    assert found[f'{name}/tensorboard'] == (pytest.approx(lr), pytest.approx({t: last[t] for t in
                                                                              ('eval/top1', 'eval/loss', 'eval/map')}))


def test_bad_input_is_refused_with_a_message_naming_it(tmp_path, monkeypatch):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(report.ReportError, match='empty is not a lightcls run'):
    report.read_runs([str(tmp_path / 'empty')])
  with pytest.raises(report.ReportError, match='missing: no such folder'):
    report.read_runs([str(tmp_path / 'missing')])
  with pytest.raises(report.ReportError, match='Name at least one run folder'):
    report.read_runs([])
  with pytest.raises(report.ReportError, match='--sort=.nope.: no such column'):
    report.sorted_rows([], 'nope')
  for module in ('matplotlib', 'matplotlib.figure'):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
  with pytest.raises(report.ReportError, match='pip install matplotlib'):
    report.figure_class()

  done = subprocess.run([sys.executable, '-m', 'lightcls.report', f'--output={tmp_path}', str(tmp_path / 'empty')],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 1 and 'lightcls.report: ' in done.stderr and 'empty is not a lightcls run' in done.stderr
