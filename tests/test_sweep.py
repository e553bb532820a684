"""python -m lightcls.sweep: a sweep resumed after one run finished skips that run and trains the others; a
sweep that cannot run (unknown key, repeated name, a workdir holding another config) stops before any run
starts; failed runs do not stop the others. The runs are the suite's small quickstart setup for a few steps,
varying only their number, so they share its compiled programs through the persistent compilation cache."""
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from lightcls import sweep
from tests.helpers import REPO, SMALL

QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.py')
EVERY_RUN = [sweep.override_arg(key, value) for key, value in SMALL.items()]
TINY = [{'train.total_steps': steps} for steps in (6, 7, 8)]  # host-side: no program of their own to compile


def sweep_file(directory, runs, name='tiny', config=QUICKSTART) -> str:
  path = directory / f'{name}.py'
  path.write_text(f'"""A test sweep."""\nCONFIG = {config!r}\n\n\ndef get_sweep():\n  return {runs!r}\n')
  return str(path)


def sweep_command(path, workdir, *args):
  return [sys.executable, '-m', 'lightcls.sweep', f'--sweep={path}', f'--workdir={workdir}', *EVERY_RUN, *args]


def read_json(path):
  with open(path) as f:
    return json.load(f)


def mtimes(directory):
  return {name: os.stat(directory / name).st_mtime_ns for name in ('config.json', 'summary.json', 'log.txt')}


def test_a_resumed_sweep_skips_the_finished_run_and_trains_the_others(tmp_path):
  path, workdir = sweep_file(tmp_path, TINY), tmp_path / 'sweep'
  first = subprocess.Popen(sweep_command(path, workdir), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
  output = []
  for line in first.stdout:  # stopped (sweep and its run, as a lost machine would) once the first run is done
    output.append(line)
    if line.startswith('[1/3] total_steps=6: done in'):
      os.killpg(first.pid, signal.SIGKILL)
      break
  first.wait()
  assert (workdir / 'total_steps=6' / 'summary.json').exists(), ''.join(output)
  assert not (workdir / 'total_steps=7' / 'summary.json').exists()
  before = mtimes(workdir / 'total_steps=6')

  second = subprocess.run(sweep_command(path, workdir), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stdout + second.stderr
  assert 'sweep tiny: 3 runs of' in second.stdout and '1 done, 2 to run, 1 at a time' in second.stdout
  assert '[1/3] total_steps=6: done earlier, best top-1' in second.stdout
  assert '[2/3] total_steps=7: done in' in second.stdout and '[3/3] total_steps=8: done in' in second.stdout
  assert mtimes(workdir / 'total_steps=6') == before  # not started again: its config, summary and log untouched
  record = read_json(workdir / 'sweep.json')
  assert record['sweep'] == path and record['config'] == QUICKSTART and record['common_overrides'] == EVERY_RUN
  assert [(run['name'], run['status'], run['skipped']) for run in record['runs']] == [
      ('total_steps=6', 'done', True), ('total_steps=7', 'done', False), ('total_steps=8', 'done', False)]
  for run, overrides in zip(record['runs'], TINY):
    assert run['overrides'] == overrides and run['workdir'] == str(workdir / run['name'])
    assert run['best_top1'] == read_json(workdir / run['name'] / 'summary.json')['best_top1']
    config = read_json(workdir / run['name'] / 'config.json')
    assert config['tags'] == ['tiny', run['name']]
    assert config['train']['total_steps'] == overrides['train.total_steps'] == read_json(
        workdir / run['name'] / 'summary.json')['steps']


def test_failed_runs_do_not_stop_the_others_and_fail_the_sweep_by_name(tmp_path):
  runs = [{'data.source': 'folder', 'data.data_dir': f'/no/such/dir{i}', 'name': f'missing{i}'} for i in (1, 2)]
  workdir = tmp_path / 'sweep'
  result = subprocess.run(sweep_command(sweep_file(tmp_path, runs), workdir, '--parallel=2'), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  for i in (1, 2):
    assert f'[{i}/2] missing{i}: FAILED (exit 1)' in result.stdout
    assert f'/no/such/dir{i}/train is not a folder' in result.stdout  # the log's last line
    assert 'is not a folder' in (workdir / f'missing{i}' / 'log.txt').read_text()
  assert 'sweep tiny: 2 run(s) failed: missing1, missing2' in result.stderr
  assert [run['status'] for run in read_json(workdir / 'sweep.json')['runs']] == ['failed', 'failed']


def test_dry_run_prints_each_run_and_its_command_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'sweep'
  result = subprocess.run(sweep_command(sweep_file(tmp_path, TINY), workdir, '--dry_run'), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == (f'sweep tiny: 3 runs of {QUICKSTART} in {workdir}, 0 done, 3 to run, 1 at a time')
  for i, (line, steps) in enumerate(zip(lines[1:], (6, 7, 8)), 1):
    assert line == (f'[{i}/3] total_steps={steps} (new): python -m lightcls.main --config={QUICKSTART} '
                    f'--workdir={workdir}/total_steps={steps} --config.train.total_steps={steps} '
                    f'\'--config.tags=("tiny", "total_steps={steps}")\' {" ".join(map(shlex.quote, EVERY_RUN))}')
  assert len(lines) == 4
  assert not workdir.exists()


@pytest.mark.parametrize('runs,extra,message', [
    ([{'optimizer.weight_deccay': 0.1}], (),
     "run 'weight_deccay=0.1': --config.optimizer.weight_deccay=0.1: config.optimizer has no key "
     "'weight_deccay'. Did you mean config.optimizer.weight_decay?"),
    ([{'optimizer.lr': 0.1}, {'optimizer.lr': 0.1}], (), "run names must be unique, and 'lr=0.1' name more than"),
    ([{'optimizer.lr': 0.1, 'name': 'a'}, {'optimizer.lr': 0.2, 'name': 'a'}], (), "and 'a' name more than one"),
    ([{'model.name': 'ghostnt'}], (), "run 'name=ghostnt': config.model.name='ghostnt' is not one of"),
    ([{'train.batch_size': 'abc'}], (), 'invalid literal for int()'),
    ([{'model.dropout': None}], (), 'model.dropout=None cannot be given on the command line'),
    ([{'optimizer.lr': 0.1, 'name': 'a/b'}], (), "run name 'a/b' is not a directory name"),
    ([{'tags': ('x',)}], (), 'config.tags is set by the sweep'),
    ([{'optimizer.lr': 0.1}], ('--config.optimizer.lr=0.2',), 'the sweep sets config.optimizer.lr itself'),
    ([{'optimizer.lr': 0.1}], ('--config.optimizr.lr=0.2',), "config has no key 'optimizr'"),
])
def test_a_sweep_that_cannot_run_stops_before_any_run_with_the_problem_named(tmp_path, runs, extra, message):
  with pytest.raises(sweep.SweepError, match=re.escape(message)):
    sweep.plan(sweep_file(tmp_path, runs), str(tmp_path / 'sweep'), extra)
  assert not (tmp_path / 'sweep').exists()


def test_a_sweep_of_a_missing_config_file_names_it(tmp_path):
  with pytest.raises(sweep.SweepError, match="CONFIG='configs/nope.py' does not exist"):
    sweep.plan(sweep_file(tmp_path, TINY, config='configs/nope.py'), str(tmp_path / 'sweep'))


def test_a_workdir_holding_another_config_stops_the_sweep_before_any_run(tmp_path):
  workdir = tmp_path / 'sweep'
  other = sweep.plan(sweep_file(tmp_path, [{'optimizer.lr': 0.002, 'name': 'a'}], name='other'), str(workdir),
                     EVERY_RUN)
  (workdir / 'a').mkdir(parents=True)
  (workdir / 'a' / 'config.json').write_text(json.dumps(other.runs[0].config))
  path = sweep_file(tmp_path, [{'optimizer.lr': 0.001, 'name': 'a'}, {'optimizer.lr': 0.003, 'name': 'b'}])
  result = subprocess.run(sweep_command(path, workdir), cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert f"run 'a': {workdir}/a holds a run of another config (optimizer.lr is 0.002 there, 0.001 here; " \
         "tags is ['other', 'a'] there, ['tiny', 'a'] here)" in result.stderr
  assert sorted(os.listdir(workdir)) == ['a'] and os.listdir(workdir / 'a') == ['config.json']


def test_a_workdir_is_new_then_unfinished_then_done(tmp_path):
  run = sweep.plan(sweep_file(tmp_path, TINY[:1]), str(tmp_path / 'sweep')).runs[0]
  assert run.state == sweep.NEW
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    json.dump({**run.config, 'key_of_an_older_version': 1}, f)  # keys of one config only do not count
  assert sweep.workdir_state(run.name, run.workdir, run.config) == sweep.UNFINISHED
  with open(os.path.join(run.workdir, 'summary.json'), 'w') as f:
    json.dump({'best_top1': 0.5}, f)
  assert sweep.workdir_state(run.name, run.workdir, run.config) == sweep.DONE


def test_grid_is_the_cartesian_product_of_the_axes_with_a_name_per_run():
  axes = {'optimizer.lr': [1e-3, 3e-3], 'optimizer.weight_decay': [0.0, 0.1, 0.2], 'seed': [0, 1]}
  runs = sweep.grid(axes)
  assert runs == [{'optimizer.lr': lr, 'optimizer.weight_decay': wd, 'seed': seed}
                  for lr, wd, seed in itertools.product(*axes.values())]
  names = [sweep.run_name(run) for run in runs]
  assert names[:2] == ['lr=0.001,weight_decay=0.0,seed=0', 'lr=0.001,weight_decay=0.0,seed=1']
  assert len(set(names)) == 12


def test_run_names_are_made_from_the_overrides_and_safe_as_directory_names():
  assert sweep.run_name({'optimizer.weight_decay': 1e-4}) == 'weight_decay=0.0001'
  assert sweep.run_name({'schedule.milestones_epochs': (28, 48), 'augment.order': ('hflip', 'affine')}) == \
      'milestones_epochs=28_48,order=hflip_affine'
  assert sweep.run_name({'data.data_dir': '/data/cars v2', 'export.formats': ()}) == \
      'data_dir=_data_cars_v2,formats=none'
  assert sweep.run_name({}) == 'base'


def test_overrides_are_formatted_as_the_config_parser_reads_them_back():
  values = {'schedule.milestones_epochs': (28, 48), 'augment.order': ('hflip',), 'export.formats': (),
            'optimizer.lr': 1e-05, 'optimizer.nesterov': True, 'model.head': 'thesis', 'data.mean': [0.5]}
  config = sweep.parsed_config(QUICKSTART, [sweep.override_arg(key, value) for key, value in values.items()])
  for key, value in values.items():
    section, name = key.split('.')
    assert config[section][name] == (tuple(value) if isinstance(value, list) else value)


def test_concurrent_runs_get_their_share_of_the_gpus(monkeypatch):
  assert sweep.slot_environments(2, ['0', '1', '2', '3']) == [{'CUDA_VISIBLE_DEVICES': '0,1'},
                                                              {'CUDA_VISIBLE_DEVICES': '2,3'}]
  assert sweep.slot_environments(1, ['0', '1']) == [{}]  # one at a time: each run on all of them
  assert sweep.slot_environments(3, []) == [{}, {}, {}]  # CPU: the runs share the cores
  with pytest.raises(sweep.SweepError, match='--parallel=3, but 2 GPU'):
    sweep.slot_environments(3, ['0', '1'])
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert sweep.visible_gpus() == ['2', '3']
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  assert sweep.visible_gpus() == []


@pytest.mark.parametrize('name', sorted(f for f in os.listdir(os.path.join(REPO, 'experiments', 'sweeps'))
                                        if f.endswith('.py')))
def test_each_sweep_of_experiments_is_valid_and_its_docstring_runs_it(tmp_path, name, monkeypatch):
  monkeypatch.chdir(REPO)  # CONFIG paths are relative to the repository root, where the commands run
  path = os.path.join('experiments', 'sweeps', name)
  planned = sweep.plan(path, str(tmp_path))
  assert all(run.config['tags'] == [name[:-3], run.name] for run in planned.runs)
  with open(path) as f:
    assert f'python -m lightcls.sweep --sweep={path}' in f.read()
