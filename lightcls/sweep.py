"""Run a series of trainings: one base config, a list of overrides, each run in a workdir of its own.

  python -m lightcls.sweep --sweep=experiments/sweeps/thesis_weight_decay.py --workdir=runs/thesis_weight_decay \\
      [--parallel=N] [--dry_run] [--config.data.data_dir=... (any override, for every run)]

A sweep file is Python: a docstring with the command that runs it, `CONFIG = 'configs/X.py'` (the base config)
and `get_sweep()`, returning one dict per run that maps config keys ('optimizer.weight_decay') to values, with
an optional 'name' (default: made from the overrides, e.g. 'weight_decay=0.1'). `grid({key: [values]})` builds
the cartesian product of value lists; explicit lists and grids concatenate.

Run NAME is `python -m lightcls.main --config=CONFIG --workdir=WORKDIR/NAME --config.KEY=VALUE ...` with
`config.tags=(SWEEP, NAME)` (SWEEP: the sweep file's stem) and the command line's overrides; its output is
appended to WORKDIR/NAME/log.txt. WORKDIR/sweep.json records the sweep and each run's status, best eval top-1
and time.

Everything is checked before the first run starts: each run's config is parsed as lightcls.main parses it and
validated (unknown keys, bad values), run names must be unique, and a workdir holding another config stops
the sweep (results are never overwritten). Running the same command again resumes the sweep: a finished run
(summary.json, same config) is skipped, an unfinished one continues from its latest checkpoint. A failed run
does not stop the others; the sweep then exits non-zero, naming it.

Runs go one after another, each on all local devices. `--parallel=N` runs N at a time: with NVIDIA GPUs the
visible GPUs are split between them (CUDA_VISIBLE_DEVICES), one or more each, so N may not exceed their number;
on CPU the runs share the cores (on a small machine rarely faster than one at a time). A TPU host's chips
are held by one process, so there runs go one at a time (the default), each on all chips.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import itertools
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lightcls import cli, config_utils, files

FLAGS = flags.FLAGS
NEW, UNFINISHED, DONE = 'new', 'unfinished', 'done'  # what a run's workdir holds before the sweep starts
NAME_CHARS = r'\w.=,+-'  # what run names (directory names) are made of


class SweepError(ValueError):
  """A sweep that cannot run as written; the message names the run and what to change."""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]  # the sweep file's
  workdir: str
  command: tuple[str, ...]
  config: dict[str, Any]     # what its config.json holds once started
  state: str                 # NEW, UNFINISHED or DONE


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  file: str
  config_file: str
  workdir: str
  common_overrides: tuple[str, ...]  # --config.KEY=VALUE given on the command line, for every run
  runs: tuple[Run, ...]


def grid(axes: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Every combination of the axes' values, one override dict each; the last axis varies fastest."""
  return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def run_name(overrides: dict[str, Any]) -> str:
  """'weight_decay=0.1', 'lr=0.001,weight_decay=0.1': each key's last part and its value, filesystem-safe."""
  text = ','.join(f'{key.rsplit(".", 1)[-1]}={_value_text(value)}' for key, value in overrides.items())
  return re.sub(f'[^{NAME_CHARS}]+', '_', text) or 'base'


def _value_text(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '_'.join(map(_value_text, value)) or 'none'
  return str(value)


def override_arg(key: str, value: Any) -> str:
  """`--config.KEY=VALUE` as config_flags parses it back: sequences as Python literals, the rest as text."""
  return f'--config.{key}={literal(value) if isinstance(value, (tuple, list)) else value}'


def literal(value: Any) -> str:
  """A Python literal of `value`, sequences as tuples, strings in double quotes (readable in shell quotes)."""
  if isinstance(value, (tuple, list)):
    items = [literal(item) for item in value]
    return f'({", ".join(items)}{"," if len(items) == 1 else ""})'
  return json.dumps(value) if isinstance(value, str) else repr(value)


def parsed_config(config_file: str, args: Sequence[str]) -> ml_collections.ConfigDict:
  """The config `python -m lightcls.main --config=CONFIG_FILE ARGS` trains: the same parser, the same values."""
  argv = ['lightcls.main', f'--config={config_file}', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def sweep_entries(path: str) -> tuple[str, list[dict[str, Any]]]:
  """The sweep file's base config (CONFIG) and runs (get_sweep())."""
  if not os.path.isfile(path):
    raise SweepError(f'--sweep={path}: no such file (sweep files are under experiments/sweeps/).')
  spec = importlib.util.spec_from_file_location(f'lightcls_sweep_{_stem(path)}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'CONFIG') or not callable(getattr(module, 'get_sweep', None)):
    raise SweepError(f"{path} must define CONFIG = 'configs/X.py' (the base config) and get_sweep(), returning "
                     'the runs as a list of override dicts.')
  entries = list(module.get_sweep())
  if not entries or not all(isinstance(entry, dict) for entry in entries):
    raise SweepError(f'{path}: get_sweep() must return a non-empty list of dicts {{config key: value}}.')
  return module.CONFIG, entries


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def named_entries(path: str, entries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
  """(name, overrides) of each run: its 'name', else one made from its overrides; unique and filesystem-safe."""
  named = []
  for entry in entries:
    overrides = {key: value for key, value in entry.items() if key != 'name'}
    named.append((entry.get('name') or run_name(overrides), overrides))
  for name, _ in named:
    if not re.fullmatch(f'[{NAME_CHARS}]+', str(name)) or name in ('.', '..'):
      raise SweepError(f'{path}: run name {name!r} is not a directory name; use letters, digits and . = , + - _')
  names = [name for name, _ in named]
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise SweepError(f'{path}: run names must be unique, and {", ".join(map(repr, duplicates))} name more than '
                     "one run; give each run a distinct 'name', or remove the repeated overrides.")
  return named


def checked_overrides(base: ml_collections.ConfigDict, path: str, name: str, overrides: dict[str, Any]) -> None:
  """Raises SweepError for a key the base config lacks, a None value or the tags the sweep sets itself."""
  for key, value in overrides.items():
    where = f'{path}, run {name!r}'
    if key == 'tags':
      raise SweepError(f'{where}: config.tags is set by the sweep to (sweep name, run name); remove it.')
    if value is None:  # config_flags reads 'None' as a string or refuses it
      raise SweepError(f'{where}: {key}=None cannot be given on the command line; leave the key out (its '
                       'default) or set it in a config file.')
    message = config_utils.explain_bad_override(base, override_arg(key, value))
    if message:
      raise SweepError(f'{where}: {message}')


def checked_extra(base: ml_collections.ConfigDict, extra: Sequence[str], sweep_keys: set[str]) -> None:
  """Raises SweepError for a command-line override that is malformed, unknown or set by the sweep itself."""
  for arg in extra:
    if '=' not in arg:
      raise SweepError(f'{arg}: give overrides for every run as --config.KEY=VALUE.')
    message = config_utils.explain_bad_override(base, arg)
    if message:
      raise SweepError(message)
    key = arg.split('=', 1)[0].removeprefix('--config.')
    if key == 'tags':
      raise SweepError(f'{arg}: config.tags is set by the sweep to (sweep name, run name); remove it.')
    if key in sweep_keys:
      raise SweepError(f'{arg}: the sweep sets config.{key} itself, run by run; change it in the sweep file.')


def run_config(config_file: str, args: Sequence[str], where: str) -> dict[str, Any]:
  """The run's config as its config.json will hold it, after lightcls's own validation."""
  try:
    config = parsed_config(config_file, args)
    config_utils.validate(config)
  except (flags.Error, config_utils.ConfigError, ValueError, TypeError) as error:
    raise SweepError(f'{where}: {error}') from None
  return json.loads(config.to_json_best_effort(sort_keys=True))


def flat(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'optimizer.lr': 0.001, ...} of a nested config dict."""
  items = {}
  for key, value in tree.items():
    items.update(flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {prefix + key: value})
  return items


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
  """The keys both configs have whose values differ (keys of one only come from another lightcls version)."""
  saved, wanted = flat(saved), flat(wanted)
  return [f'{key} is {saved[key]!r} there, {wanted[key]!r} here' for key in sorted(saved.keys() & wanted.keys())
          if saved[key] != wanted[key]]


def workdir_state(name: str, workdir: str, config: dict[str, Any]) -> str:
  """NEW, UNFINISHED or DONE (summary.json, and the export the config asks for); SweepError if the workdir
  holds a run of another config."""
  saved = files.read_json(os.path.join(workdir, 'config.json'))
  if saved is None:
    return NEW
  changed = differences(saved, config)
  if changed:
    more = f'; and {len(changed) - 4} more' if len(changed) > 4 else ''
    raise SweepError(f'run {name!r}: {workdir} holds a run of another config ({"; ".join(changed[:4])}{more}). '
                     'Give the sweep another --workdir or the run another name, or delete that workdir to start over.')
  summary = files.read_json(os.path.join(workdir, 'summary.json'))
  finished = summary is not None and ('exports' in summary or not config['export']['formats'])
  return DONE if finished else UNFINISHED


def plan(path: str, workdir: str, extra: Sequence[str] = ()) -> Sweep:
  """The sweep in `path` with every run checked, or SweepError naming the first problem; starts nothing."""
  config_file, entries = sweep_entries(path)
  if not os.path.isfile(config_file.split(':', 1)[0]):
    raise SweepError(f'{path}: CONFIG={config_file!r} does not exist (a path from the current directory: run '
                     'from the repository root, or make it absolute).')
  named = named_entries(path, entries)
  base = parsed_config(config_file, [])
  for name, overrides in named:
    checked_overrides(base, path, name, overrides)
  checked_extra(base, extra, {key for _, overrides in named for key in overrides})
  sweep_name, runs = _stem(path), []
  for name, overrides in named:
    args = [*(override_arg(k, v) for k, v in overrides.items()), override_arg('tags', (sweep_name, name)), *extra]
    run_dir = os.path.join(workdir, name)
    config = run_config(config_file, args, f'{path}, run {name!r}')
    command = (sys.executable, '-m', 'lightcls.main', f'--config={config_file}', f'--workdir={run_dir}', *args)
    runs.append(Run(name, overrides, run_dir, command, config, workdir_state(name, run_dir, config)))
  return Sweep(sweep_name, path, config_file, workdir, tuple(extra), tuple(runs))


def visible_gpus() -> list[str]:
  """The NVIDIA GPUs runs may use, found without importing JAX (a process that starts JAX holds the GPUs)."""
  if 'CUDA_VISIBLE_DEVICES' in os.environ:
    return [gpu for gpu in os.environ['CUDA_VISIBLE_DEVICES'].split(',') if gpu.strip()]
  if not shutil.which('nvidia-smi'):
    return []
  listed = subprocess.run(['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'], capture_output=True,
                          text=True)
  return listed.stdout.split() if listed.returncode == 0 else []


def slot_environments(parallel: int, gpus: Sequence[str]) -> list[dict[str, str]]:
  """The environment variables of each of the `parallel` concurrent runs: its share of the GPUs, if any."""
  if parallel < 1:
    raise SweepError(f'--parallel={parallel}: give the number of runs at a time, 1 or more.')
  if parallel == 1 or not gpus:
    return [{}] * parallel
  if parallel > len(gpus):
    raise SweepError(f'--parallel={parallel}, but {len(gpus)} GPU(s) are visible: each run at a time needs a GPU '
                     f'of its own (JAX takes most of its memory). Use --parallel={len(gpus)} or fewer.')
  share = len(gpus) // parallel
  return [{'CUDA_VISIBLE_DEVICES': ','.join(gpus[i * share:(i + 1) * share])} for i in range(parallel)]


def shown(command: Sequence[str]) -> str:
  return shlex.join(['python', *command[1:]])


def best_top1(workdir: str) -> float | None:
  return (files.read_json(os.path.join(workdir, 'summary.json')) or {}).get('best_top1')


def percent(top1: float | None) -> str:
  return 'best top-1 -' if top1 is None else f'best top-1 {100 * top1:.2f}%'


def last_line(path: str) -> str:
  """The log's last line: where a run fails, usually what went wrong."""
  with open(path, 'rb') as f:
    f.seek(max(0, os.path.getsize(path) - 4096))
    lines = [line for line in f.read().decode(errors='replace').splitlines() if line.strip()]
  return lines[-1].strip() if lines else ''


class Ledger:
  """Each run's status: printed as it changes and kept in WORKDIR/sweep.json, replaced whole (never half
  written), so it can be read while the sweep runs."""

  def __init__(self, sweep: Sweep):
    self.sweep, self.lock = sweep, threading.Lock()
    self.status = {run.name: {'status': DONE if run.state == DONE else 'pending', 'skipped': run.state == DONE}
                   for run in sweep.runs}

  def update(self, run: Run, line: str, **status: Any) -> None:
    with self.lock:
      self.status[run.name].update(status)
      print(f'[{self.sweep.runs.index(run) + 1}/{len(self.sweep.runs)}] {run.name}: {line}', flush=True)
      self.write()

  def write(self) -> None:
    record = {'sweep': self.sweep.file, 'config': self.sweep.config_file,
              'common_overrides': list(self.sweep.common_overrides),
              'runs': [{'name': run.name, 'overrides': run.overrides, 'workdir': run.workdir,
                        'command': shown(run.command), **self.status[run.name]} for run in self.sweep.runs]}
    os.makedirs(self.sweep.workdir, exist_ok=True)
    files.write_json(os.path.join(self.sweep.workdir, 'sweep.json'), record)

  def failed(self) -> list[str]:
    return [name for name, status in self.status.items() if status['status'] == 'failed']


def train(run: Run, environment: dict[str, str]) -> int:
  """Runs `run` to its end (appending its output to its log.txt); its exit code."""
  os.makedirs(run.workdir, exist_ok=True)
  with open(os.path.join(run.workdir, 'log.txt'), 'a') as log:
    log.write(f'$ {shown(run.command)}\n')
    log.flush()
    return subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, **environment}).returncode


def execute(sweep: Sweep, environments: list[dict[str, str]]) -> list[str]:
  """Trains the sweep's unfinished runs, len(environments) at a time; the names of those that failed."""
  ledger, slots, stop = Ledger(sweep), queue.SimpleQueue(), threading.Event()
  for environment in environments:
    slots.put(environment)

  def one(run: Run) -> None:
    environment = slots.get()
    try:
      if stop.is_set():
        return
      devices = f' on GPU {environment["CUDA_VISIBLE_DEVICES"]}' if environment else ''
      verb = 'resumed' if run.state == UNFINISHED else 'started'
      log = os.path.join(run.workdir, 'log.txt')
      ledger.update(run, f'{verb}{devices} (log: {log})', status='running')
      started = time.monotonic()
      code = train(run, environment)
      seconds = time.monotonic() - started
      if code == 0:
        top1 = best_top1(run.workdir)
        ledger.update(run, f'done in {cli.duration(seconds)}, {percent(top1)}', status=DONE,
                      seconds=round(seconds, 1), best_top1=top1)
      else:
        ledger.update(run, f'FAILED (exit {code}) after {cli.duration(seconds)}: {last_line(log)}\n'
                      f'  log: {log}', status='failed', seconds=round(seconds, 1), returncode=code)
    finally:
      slots.put(environment)

  ledger.write()
  for run in sweep.runs:
    if run.state == DONE:
      top1 = best_top1(run.workdir)
      ledger.update(run, f'done earlier, {percent(top1)} (skipped)', best_top1=top1)
  with concurrent.futures.ThreadPoolExecutor(len(environments)) as pool:
    futures = [pool.submit(one, run) for run in sweep.runs if run.state != DONE]
    try:
      for future in concurrent.futures.as_completed(futures):
        future.result()
    except KeyboardInterrupt:  # the runs got the interrupt too (same process group); start no more
      stop.set()
      raise
  return ledger.failed()


def headline(sweep: Sweep, parallel: int) -> str:
  todo = sum(run.state != DONE for run in sweep.runs)
  return (f'sweep {sweep.name}: {len(sweep.runs)} runs of {sweep.config_file} in {sweep.workdir}, '
          f'{len(sweep.runs) - todo} done, {todo} to run, {parallel} at a time')


def commands(sweep: Sweep) -> str:
  """Each run, its state and its command, one a line."""
  return '\n'.join(f'[{i}/{len(sweep.runs)}] {run.name} ({run.state}): {shown(run.command)}'
                   for i, run in enumerate(sweep.runs, 1))


def define_flags() -> None:
  """The command's flags (defined only when it runs: sweep files import this module for `grid`)."""
  flags.DEFINE_string('sweep', None, 'The sweep file (see experiments/sweeps/).')
  flags.DEFINE_string('workdir', None, "Where the runs' workdirs (WORKDIR/<run name>) and sweep.json go.")
  flags.DEFINE_integer('parallel', 1, 'Runs at a time (with GPUs, each gets its share of them).')
  flags.DEFINE_bool('dry_run', False, 'Check the sweep and print its runs and their commands; run nothing.')
  flags.mark_flags_as_required(['sweep', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing of the sweep's own flags; --config.KEY=VALUE arguments follow as arguments, for every run."""
  overrides = [arg for arg in argv[1:] if arg.startswith('--config.')]
  try:
    return FLAGS([arg for arg in argv if arg not in overrides]) + overrides
  except flags.Error as error:
    sys.exit(f'lightcls: {error}')


def main(argv: list[str]) -> None:
  extra = [arg for arg in argv[1:] if arg.startswith('--config.')]
  if len(extra) < len(argv) - 1:
    raise app.UsageError(f'Unexpected arguments: {[arg for arg in argv[1:] if arg not in extra]}')
  try:
    sweep = plan(FLAGS.sweep, FLAGS.workdir, extra)
    environments = slot_environments(FLAGS.parallel, visible_gpus())
  except SweepError as error:
    sys.exit(f'lightcls: {error}')
  print(headline(sweep, len(environments)), flush=True)
  if FLAGS.dry_run:
    print(commands(sweep))
    return
  started = time.monotonic()
  failed = execute(sweep, environments)
  print(f'sweep {sweep.name}: {len(sweep.runs) - len(failed)} of {len(sweep.runs)} runs done in '
        f'{cli.duration(time.monotonic() - started)}; sweep.json in {sweep.workdir}', flush=True)
  if failed:
    sys.exit(f'lightcls: sweep {sweep.name}: {len(failed)} run(s) failed: {", ".join(failed)} (their log.txt '
             'says why; run the same command again to retry them).')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)
