"""launch/colab_tpu.ipynb executed headlessly on this machine's CPU, as CI does, with its tiny config (the
Colab-only steps skipped): every cell runs without error, and the run, the export and the predictions it
shows are real. The executed notebook is kept in the test artifacts."""
import json
import os
import re
import sys

import nbclient
import nbformat

from tests import helpers

NOTEBOOK = os.path.join(helpers.REPO, 'launch', 'colab_tpu.ipynb')
ARTIFACTS = os.environ.get('LIGHTCLS_TEST_ARTIFACTS', os.path.join(helpers.REPO, 'test-artifacts'))


def _kernel_path(folder):
  """A JUPYTER_PATH whose `python3` kernel runs this interpreter (whatever other kernelspecs are installed)."""
  spec = folder / 'kernels' / 'python3'
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3 (lightcls tests)', 'language': 'python'}))
  return str(folder)


def _text(cell):
  """Everything a code cell printed or displayed as text."""
  parts = []
  for output in cell.outputs:
    if output.output_type == 'stream':
      parts.append(output.text)
    elif 'data' in output:
      parts.append(output.data.get('text/plain', ''))
  return '\n'.join(parts)


def _cell(nb, fragment):
  (cell,) = [c for c in nb.cells if c.cell_type == 'code' and fragment in c.source]
  return cell


def test_the_colab_notebook_runs_top_to_bottom_on_cpu_with_its_tiny_config(tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  monkeypatch.setenv('JUPYTER_PATH', _kernel_path(tmp_path / 'jupyter'))
  monkeypatch.setenv('LIGHTCLS_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('LIGHTCLS_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.delenv('LIGHTCLS_NOTEBOOK_TENSORBOARD', raising=False)  # no TensorBoard server in CI
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not c.get('outputs') and not c.get('execution_count') for c in nb.cells if c.cell_type == 'code'), (
      'the notebook is committed with its outputs cleared')
  # Jupyter starts a notebook's kernel in the notebook's folder; the notebook finds the checkout from there.
  client = nbclient.NotebookClient(nb, kernel_name='python3', timeout=600,
                                   resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  try:
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
  finally:
    os.makedirs(ARTIFACTS, exist_ok=True)
    nbformat.write(nb, os.path.join(ARTIFACTS, 'colab_tpu.executed.ipynb'))

  assert 'Colab: False; config: tiny' in _text(_cell(nb, 'TINY = '))
  devices = _text(_cell(nb, 'jax.devices()'))
  assert 'device(s)' in devices and 'WARNING' not in devices  # JAX runs on the accelerator detected
  assert f'tensorboard --logdir "{workdir}' in _text(_cell(nb, 'TENSORBOARD_DIR ='))
  for fragment in ('preview.preview(', 'metrics.confusion_image('):  # images shown, not just computed
    assert any('image/png' in o.get('data', {}) for o in _cell(nb, fragment).outputs), fragment

  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  assert 0.0 <= summary['best_top1'] <= 1.0 and summary['best_epoch'] == 1
  assert f'{100 * summary["best_top1"]:.2f}%' in _text(_cell(nb, 'train.train_and_evaluate('))
  assert 'macro avg' in _text(_cell(nb, 'metrics.report_text('))

  export = workdir / 'export' / 'tflite-float32'
  with open(export / 'model_card.json') as f:
    card = json.load(f)
  assert (export / 'model.tflite').stat().st_size > 0
  assert card['verification']['passed'] and card['verification']['images'] == 16
  with open(export / 'labels.txt') as f:
    labels = f.read().split()
  assert labels == [str(d) for d in range(10)]

  rows = _text(_cell(nb, 'predict.table(')).strip().splitlines()
  assert len(rows) == 6
  for row in rows:  # <file named after its true class>  <label> <p>%  <label> <p>%  <label> <p>%
    match = re.fullmatch(r'\S+_(\d)\.png\s+(\S+) ([\d.]+)%\s+(\S+) ([\d.]+)%\s+(\S+) ([\d.]+)%', row)
    assert match, row
    assert {match[2], match[4], match[6]} <= set(labels)
    assert float(match[3]) >= float(match[5]) >= float(match[7])
