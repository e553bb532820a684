"""TensorBoard as a user sees it: the real `tensorboard --logdir=WORKDIR` on a finished small run, what its HTTP
data API serves read back against the run's own files, and its pages rendered in headless Chromium.

The screenshots are kept as test artifacts in $LIGHTCLS_TEST_ARTIFACTS (default: test-artifacts/ in the
repository, ignored by git).
"""
import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from lightcls import metrics
from tests.helpers import REPO, digits_subset, read_jsonl, small_config

RUN = 'tensorboard'  # the run TensorBoard finds in WORKDIR: the writer's folder
SCALAR_CARDS = ('eval/loss', 'eval/top1', 'eval/top5', 'train/learning_rate', 'train/loss', 'train/top1')
IMAGE_TAGS = ('images/augmented', 'images/confusion_matrix')
# Direct (no proxy) requests to the loopback server.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def eventually(check, timeout=60):
  """check()'s value once it passes (returns without an AssertionError), retried until `timeout` seconds have
  passed; then its last failure."""
  deadline = time.monotonic() + timeout
  while True:
    try:
      return check()
    except AssertionError:
      if time.monotonic() > deadline:
        raise
    time.sleep(0.1)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A finished run of the suite's small GhostNet config (its programs come from the compilation cache):
  3 epochs of 4 steps on 64 digits, logged every step, with a warmup epoch then a cosine decay, so the
  learning-rate curve has a shape."""
  from lightcls import train
  workdir = str(tmp_path_factory.mktemp('run'))
  config = small_config(**{'train.total_steps': 12, 'train.log_every_steps': 1, 'schedule.name': 'cosine',
                           'schedule.warmup_epochs': 1.0})
  train.train_and_evaluate(config, workdir, dataset=digits_subset())
  return workdir


@pytest.fixture(scope='module')
def server(workdir, tmp_path_factory):
  """The URL of `tensorboard --logdir=WORKDIR` on a loopback port the OS picks (--port=0, read back from its
  banner), once it serves the whole run (it loads event files in the background, again every second)."""
  log = tmp_path_factory.mktemp('tensorboard') / 'log.txt'
  with open(log, 'w') as out:
    process = subprocess.Popen([sys.executable, '-m', 'tensorboard.main', f'--logdir={workdir}',
                                '--host=127.0.0.1', '--port=0', '--reload_interval=1'],
                               stdout=out, stderr=subprocess.STDOUT)
  try:
    def banner():
      if process.poll() is not None:
        pytest.fail(f'tensorboard exited: {log.read_text()[-3000:]}')
      found = re.search(r'TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)', log.read_text())
      assert found, 'no banner yet'
      return found.group(1)
    url = eventually(banner)

    def loaded():  # the last epoch's scalars and images
      assert 'eval/top1' in get(url, 'data/plugin/scalars/tags').get(RUN, {})
      assert [step for _, step, _ in get(url, 'data/plugin/scalars/scalars', run=RUN, tag='eval/top1')] == [4, 8, 12]
      assert RUN in get(url, 'data/plugin/images/tags')
    eventually(loaded)
    yield url
  finally:
    process.terminate()  # its data server (a child) exits with it
    process.wait(timeout=30)


def get(url, path, **query):
  """A JSON answer of TensorBoard's HTTP API."""
  with OPENER.open(f'{url}{path}?{urllib.parse.urlencode(query)}', timeout=30) as response:
    return json.load(response)


def post(url, path, body):
  """The hparams plugin takes its requests as POSTed JSON."""
  request = urllib.request.Request(url + path, json.dumps(body).encode(), {'Content-Type': 'application/json'})
  with OPENER.open(request, timeout=30) as response:
    return json.load(response)


def png(url, query):
  """An image as served (PNG bytes), decoded."""
  with OPENER.open(f'{url}data/plugin/images/individualImage?{query}', timeout=30) as response:
    data = response.read()
  assert data.startswith(b'\x89PNG')
  return Image.open(io.BytesIO(data))


def session_groups(server):
  """The hparams view's rows: one group of sessions (runs) for each set of hparams."""
  return post(server, 'data/plugin/hparams/session_groups', {
      'startIndex': 0, 'sliceSize': 10,
      'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE', 'STATUS_RUNNING']})['sessionGroups']


def scalar_rows(workdir):
  """{tag: {step: value}} of every scalar in metrics.jsonl."""
  series = {}
  for row in read_jsonl(workdir):
    for tag, value in row.items():
      if tag not in ('step', 'time') and isinstance(value, float | int):
        series.setdefault(tag, {})[row['step']] = value
  return series


def test_every_scalar_of_metrics_jsonl_is_served_with_the_same_values_learning_rate_curves_included(workdir, server):
  expected = scalar_rows(workdir)
  tags = get(server, 'data/plugin/scalars/tags')
  assert list(tags) == [RUN] == get(server, 'data/runs')
  assert sorted(tags[RUN]) == sorted(expected)
  for tag in ('train/loss', 'train/top1', 'train/top5', 'train/learning_rate', 'train/images_per_second',
              'eval/loss', 'eval/top1', 'eval/top5', 'eval/map', 'learning_rate'):
    assert tag in expected, tag
  for tag, values in expected.items():
    served = {step: value for _, step, value in get(server, 'data/plugin/scalars/scalars', run=RUN, tag=tag)}
    assert served == pytest.approx(values, rel=1e-6), tag  # (stored as float32)
  assert len(set(expected['train/learning_rate'].values())) > 2  # a curve, not a flat line
  # The epoch's rate: that of its last step.
  assert expected['learning_rate'] == pytest.approx({s: expected['train/learning_rate'][s] for s in (4, 8, 12)})


def test_the_hparams_entry_holds_the_flattened_config_and_the_last_eval_metrics(workdir, server):
  rows = read_jsonl(workdir)
  hparams = rows[0]['hparams']
  experiment = post(server, 'data/plugin/hparams/experiment', {'experimentName': ''})
  assert sorted(h['name'] for h in experiment['hparamInfos']) == sorted(hparams)
  [group] = session_groups(server)
  assert [session['name'] for session in group['sessions']] == [RUN]
  assert group['hparams'] == hparams  # numbers, bools and strings as written
  assert hparams['optimizer.lr'] == 2e-3 and hparams['model.name'] == 'ghostnet'
  last = rows[-1]
  served = {m['name']['tag']: m['value'] for m in group['metricValues']}
  assert {t: served[t] for t in ('eval/top1', 'eval/loss', 'eval/map')} == pytest.approx(
      {t: last[t] for t in ('eval/top1', 'eval/loss', 'eval/map')}, rel=1e-6)


def test_the_images_are_the_augmentation_grid_at_step_0_and_each_epochs_confusion_matrix(workdir, server):
  assert sorted(get(server, 'data/plugin/images/tags')[RUN]) == sorted(IMAGE_TAGS)
  confusion = get(server, 'data/plugin/images/images', run=RUN, tag='images/confusion_matrix', sample=0)
  assert [image['step'] for image in confusion] == [4, 8, 12]
  with open(os.path.join(workdir, 'class_report_last.json')) as f:
    matrix = np.asarray(json.load(f)['confusion_matrix'])
  np.testing.assert_array_equal(np.asarray(png(server, confusion[-1]['query']).convert('RGB')),
                                metrics.confusion_image(matrix))
  [augmented] = get(server, 'data/plugin/images/images', run=RUN, tag='images/augmented', sample=0)
  grid = png(server, augmented['query'])
  assert augmented['step'] == 0 and min(grid.size) > 32  # more than one 32x32 training image


def test_the_parameter_count_is_served_as_text(server):
  [text] = get(server, 'data/plugin/text/text', run=RUN, tag='model/parameters')
  assert text['step'] == 0 and text['text'] == '<p>ghostnet: 3,914,030 parameters</p>'


class Browser:
  """Headless Chromium driven through the DevTools protocol on a pipe (its fds 3 and 4, JSON messages ended by
  NUL): the test waits for what it checks to render instead of guessing a time budget, and needs no
  websocket client."""

  def __init__(self, width, height):
    commands, self._commands = os.pipe()
    self._replies, replies = os.pipe()
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
             '--disable-component-update', '--no-first-run', '--remote-debugging-pipe']
    # bash, not sh: dash takes no fd above 9 in a redirection.
    self.process = subprocess.Popen(['bash', '-c', f'exec "$0" "$@" 3<&{commands} 4>&{replies}',
                                     shutil.which('chromium'), *flags, 'about:blank'],
                                    pass_fds=(commands, replies), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(commands)
    os.close(replies)
    self._buffer, self._id = b'', 0
    page = next(t for t in self.call('Target.getTargets')['targetInfos'] if t['type'] == 'page')
    self._session = self.call('Target.attachToTarget', targetId=page['targetId'], flatten=True)['sessionId']
    # The page's own size (--window-size also counts the window's frame).
    self.call('Emulation.setDeviceMetricsOverride', self._session, width=width, height=height, deviceScaleFactor=1,
              mobile=False)

  def call(self, method, session=None, **params):
    """The result of a DevTools command (to the page with `session`), skipping the events in between."""
    self._id += 1
    os.write(self._commands, json.dumps({'id': self._id, 'method': method, 'params': params,
                                         **({'sessionId': session} if session else {})}).encode() + b'\0')
    while True:
      while b'\0' not in self._buffer:
        assert select.select([self._replies], [], [], 30)[0], f'no answer to {method} in 30 s'
        chunk = os.read(self._replies, 1 << 20)
        assert chunk, 'Chromium exited'
        self._buffer += chunk
      message, self._buffer = self._buffer.split(b'\0', 1)
      reply = json.loads(message)
      if reply.get('id') == self._id:
        assert 'error' not in reply, reply['error']
        return reply['result']

  def open(self, url):
    self.call('Page.navigate', self._session, url=url)

  def evaluate(self, script):
    """The value of a JavaScript expression in the page."""
    result = self.call('Runtime.evaluate', self._session, expression=script, returnByValue=True)
    assert 'exceptionDetails' not in result, result['exceptionDetails']
    return result['result'].get('value')

  def screenshot(self, name):
    """The page as shown, saved as a test artifact; its size."""
    artifacts = os.environ.get('LIGHTCLS_TEST_ARTIFACTS', os.path.join(REPO, 'test-artifacts'))
    os.makedirs(artifacts, exist_ok=True)
    data = base64.b64decode(self.call('Page.captureScreenshot', self._session, format='png')['data'])
    with open(os.path.join(artifacts, name), 'wb') as f:
      f.write(data)
    return Image.open(io.BytesIO(data)).size

  def close(self):
    try:
      self.call('Browser.close')
      self.process.wait(timeout=30)
    finally:
      if self.process.poll() is None:  # hung: still ended
        self.process.kill()
      os.close(self._commands)
      os.close(self._replies)


@pytest.fixture(scope='module')
def browser():
  if shutil.which('chromium') is None:
    pytest.skip('needs headless Chromium (apt-get install chromium); CI has it')
  browser = Browser(1600, 1000)
  yield browser
  browser.close()


# The page's text, into shadow roots (the Polymer dashboards draw there) and without style sheets.
PAGE_TEXT = """(function text(node) {
  if (node.nodeType === Node.TEXT_NODE) return node.textContent;
  if (['STYLE', 'SCRIPT'].includes(node.nodeName)) return '';
  return [...(node.shadowRoot ? [node.shadowRoot] : []), ...node.childNodes].map(text).join(' ');
})(document.body)"""

# Each time-series card shown: its tag, the number of points of its drawn line (an SVG path with `forceSVG`; by
# default a WebGL canvas), and the natural size of its image (0 x 0 until loaded).
CARDS = """[...document.querySelectorAll('scalar-card-component, image-card-component')].map(card => {
  const line = [...card.querySelectorAll('svg path')].find(p => !p.closest('mat-icon'));
  const image = card.querySelector('img');
  return {tag: card.querySelector('tb-truncated-path').title,
          points: line ? line.getAttribute('d').match(/[ML]/g).length : 0,
          size: image ? [image.naturalWidth, image.naturalHeight] : null};
})"""


def show(browser, server, page, ready):
  """Opens a TensorBoard page and returns the value of `ready` (a script) once truthy; fails at once on the
  "No dashboards are active" page, TensorBoard's landing page when it finds no data."""
  browser.open(server + page)

  def rendered():
    if 'No dashboards are active' in browser.evaluate(PAGE_TEXT):
      pytest.fail(f'TensorBoard shows no dashboards at {page}')
    value = browser.evaluate(ready)
    assert value, f'{page} is not rendered yet'
    return value
  return eventually(rendered)


def time_series(browser, server, tag_filter, expected):
  """TensorBoard's landing page (no dashboard named: the Time Series one, given data) with the cards of
  `tag_filter`, once they are `expected` ({tag: (points of its line, natural size of its image)}); its settings
  pane closed, as a screenshot then shows more of the cards."""
  query = urllib.parse.urlencode({'forceSVG': 'true', 'smoothing': 0, 'tagFilter': tag_filter})
  show(browser, server, f'?{query}', CARDS)
  # (Open in a new profile; closed, it stays closed on the next page.)
  browser.evaluate("document.querySelector('[aria-label=\"Close side pane\"]')?.click()")

  def drawn():
    assert {c['tag']: (c['points'], c['size']) for c in browser.evaluate(CARDS)} == expected
  eventually(drawn)


def test_the_time_series_dashboard_draws_the_train_and_eval_curves_and_the_images(server, browser):
  lengths = {tag: len(get(server, 'data/plugin/scalars/scalars', run=RUN, tag=tag)) for tag in SCALAR_CARDS}
  assert lengths == {'eval/loss': 3, 'eval/top1': 3, 'eval/top5': 3, 'train/learning_rate': 12, 'train/loss': 12,
                     'train/top1': 12}
  time_series(browser, server, '^(train/(loss|top1|learning_rate)|eval/(loss|top1|top5))$',
              {tag: (n, None) for tag, n in lengths.items()})
  assert browser.screenshot('tensorboard_scalars.png') == (1600, 1000)

  sizes = {tag: png(server, get(server, 'data/plugin/images/images', run=RUN, tag=tag, sample=0)[-1]['query']).size
           for tag in IMAGE_TAGS}
  time_series(browser, server, '^images/', {tag: (0, list(size)) for tag, size in sizes.items()})
  browser.screenshot('tensorboard_images.png')


def test_the_hparams_dashboard_lists_the_run_with_its_config_and_metrics(server, browser):
  [group] = session_groups(server)
  text = show(browser, server, '#hparams', f'(text => text.includes({json.dumps(group["name"])}) && text)({PAGE_TEXT})')
  for label in ('optimizer.lr', 'model.name', 'eval/top1'):
    assert label in text, label
  browser.screenshot('tensorboard_hparams.png')
