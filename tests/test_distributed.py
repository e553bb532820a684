"""Two processes joined by jax.distributed (launch/local_processes.sh, coordinator on 127.0.0.1) against one
process with two devices: the same global batches and steps, one writer, a checkpoint one process reads."""
import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from lightcls import checkpoint, config_utils, distributed
from tests.helpers import REPO, main_args, read_jsonl, run_main, small_config

# MobileNet V1 rather than the suite's GhostNet: on CPU only process 0 writes JAX's persistent compilation
# cache and process 1's cache keys differ from process 0's (they hash its own view of the topology), so
# process 1 compiles every program on every run: ~25 s for MobileNet V1, ~85 s for GhostNet (2 cores).
RUN = {'model.name': 'mobilenet_v1', 'train.total_steps': 4, 'train.log_every_steps': 1}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(count, workdir, **overrides):
  """launch/local_processes.sh: `count` processes of `python -m lightcls.main` (this Python's)."""
  env = {**os.environ, 'JAX_COORDINATOR_PORT': str(free_port()),
         'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']}
  env.pop('CUDA_VISIBLE_DEVICES', None)
  return subprocess.Popen(['launch/local_processes.sh', str(count), *main_args(workdir, **overrides)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{'two_processes': workdir, 'two_devices': workdir, 'log': the two processes' output}. One after the
  other: on 2 cores, at once is slower (measured)."""
  workdirs = {name: str(tmp_path_factory.mktemp(name)) for name in ('two_processes', 'two_devices')}
  processes = run_processes(2, workdirs['two_processes'], **RUN)
  log = processes.communicate(timeout=600)[0]
  one = run_main(workdirs['two_devices'], env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}, **RUN)
  one_log = one.communicate(timeout=600)[0]
  assert processes.returncode == 0, log[-5000:]
  assert one.returncode == 0, one_log[-3000:]
  return {**workdirs, 'log': log}


def train_losses(workdir):
  return {row['step']: row['train/loss'] for row in read_jsonl(workdir) if 'train/loss' in row}


def final_eval(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)['final']


def test_two_processes_train_as_one_process_on_two_devices(runs):
  for process in (0, 1):
    assert f'Process {process} of 2' in runs['log'] and f'[{process}]' in runs['log']
  assert 'on 2 device(s)' in runs['log']
  # The same global batches (each process its half) through the same program over a 2-device mesh: the
  # two runs agree bit for bit (measured); the tolerance only allows for a summation order of another
  # XLA build. (Against one device they drift apart from the second step: Adam's first, sign-like updates
  # amplify reduction-order noise ~10x per step from a fresh init.)
  losses = train_losses(runs['two_processes'])
  assert sorted(losses) == [1, 2, 3, 4]
  assert losses == pytest.approx(train_losses(runs['two_devices']), rel=1e-6)
  two_processes, two_devices = final_eval(runs['two_processes']), final_eval(runs['two_devices'])
  assert two_processes['eval/examples'] == 360  # every eval example once, from both processes' rows
  assert two_processes == pytest.approx(two_devices, rel=1e-6)


def test_only_process_zero_writes_logs(runs):
  # Process 1 writing too would repeat metrics.jsonl's rows and add a TensorBoard file of its own.
  rows = [(row['step'], sorted(row)) for row in read_jsonl(runs['two_processes'])]
  assert rows == [(row['step'], sorted(row)) for row in read_jsonl(runs['two_devices'])]
  assert len(os.listdir(os.path.join(runs['two_processes'], 'tensorboard'))) == 1
  assert not [name for name in os.listdir(runs['two_processes']) if name.endswith('.tmp')]


def test_one_process_reads_the_checkpoint_of_two(runs):
  # Each process wrote its part of the checkpoint; this process, on one device, reads them all back and
  # finds the state the two-device run saved.
  (state, meta, step), (reference, reference_meta, _) = (checkpoint.read(runs[name])
                                                         for name in ('two_processes', 'two_devices'))
  assert step == 4 and jax.tree.structure(state) == jax.tree.structure(reference)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), state, reference)
  assert meta['last_eval'] == pytest.approx(reference_meta['last_eval'], rel=1e-6)


CLUSTER_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
                     'SLURM_LOCALID', 'SLURM_STEP_NUM_NODES', 'OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE',
                     'TPU_WORKER_HOSTNAMES')
SLURM_STEP = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'node[1-2]', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0',
              'SLURM_STEP_NUM_NODES': '2'}


@pytest.mark.parametrize('environment, several', [
    ({}, False),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
    ({**SLURM_STEP, 'SLURM_NTASKS': '4'}, True),
    ({**SLURM_STEP, 'SLURM_NTASKS': '1'}, False),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, False),  # the batch script, before srun starts the tasks
    ({'OMPI_MCA_orte_hnp_uri': '1.0;tcp://10.0.0.1:5000', 'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-0,host-1'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-0'}, False),
])
def test_auto_initializes_where_the_environment_runs_several_processes(monkeypatch, environment, several):
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  config = small_config().distributed
  assert distributed.wanted(config) == several
  config.initialize = 'never'
  assert not distributed.wanted(config)


def test_auto_initializes_where_the_config_names_a_coordinator(monkeypatch):
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  config = small_config().distributed
  config.coordinator_address = '127.0.0.1:1234'
  assert distributed.wanted(config)


@pytest.mark.parametrize('values, message', [
    ({'initialize': 'yes'}, "config.distributed.initialize='yes' is not one of"),
    ({'coordinator_address': '10.0.0.1'}, "must be 'host:port'"),
    ({'num_processes': 0}, 'config.distributed.num_processes must be positive'),
    ({'num_processes': 2, 'process_id': 2}, 'config.distributed.process_id=2 must be in 0 .. 1'),
    ({'process_id': -1}, 'config.distributed.process_id=-1 must be in 0 .. num_processes - 1'),
])
def test_unusable_distributed_values_are_config_errors(values, message):
  config = small_config().distributed
  config.update(values)
  with pytest.raises(config_utils.ConfigError, match=re.escape(message)):
    distributed.check(config)
