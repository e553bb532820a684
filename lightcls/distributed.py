"""Several processes training one model: `jax.distributed.initialize` from `config.distributed` or the
cluster's environment, once per process and before any JAX computation.

After it, `jax.devices()` lists the devices of every process and the train step's mesh spans them all; each
process feeds its own rows of every global batch (`pipeline.train_batches`), only process 0 writes logs and
summaries, and every process writes its part of each checkpoint (Orbax), so all must see the workdir.
"""
from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

from lightcls import config_utils

MODES = ('auto', 'always', 'never')


def cluster_environment() -> str | None:
  """The launcher whose environment makes this process one of several, as `jax.distributed.initialize()`
  detects it (the same variables as jax/_src/clusters), or None for a lone process."""
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return f'JAX_COORDINATOR_ADDRESS={env["JAX_COORDINATOR_ADDRESS"]}'
  slurm_step = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_STEP_NUM_NODES')
  # An srun step's tasks: the batch script itself lacks the step variables and is one process.
  if all(name in env for name in slurm_step) and int(env.get('SLURM_NTASKS', 1)) > 1:
    return f'SLURM ({env["SLURM_NTASKS"]} tasks)'
  if 'OMPI_MCA_orte_hnp_uri' in env and int(env.get('OMPI_COMM_WORLD_SIZE', 1)) > 1:
    return f'Open MPI ({env["OMPI_COMM_WORLD_SIZE"]} ranks)'
  hosts = [h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]
  if len(hosts) > 1:  # set on GKE; a Cloud TPU VM keeps it in its metadata instead: use initialize='always'
    return f'Cloud TPU ({len(hosts)} hosts)'
  return None


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for `config.distributed` values that cannot work."""
  config_utils.choice('distributed.initialize', config.initialize, MODES)
  address, count, index = config.coordinator_address, config.num_processes, config.process_id
  if address is not None:
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit():
      raise config_utils.ConfigError(f"config.distributed.coordinator_address={address!r} must be 'host:port' "
                                     "(e.g. '10.0.0.1:1234': process 0's address and a free port).")
  config_utils.positive('distributed.num_processes', count, allow_none=True)
  if index is not None and (index < 0 or (count is not None and index >= count)):
    raise config_utils.ConfigError(f'config.distributed.process_id={index} must be in 0 .. '
                                   f'{"num_processes - 1" if count is None else count - 1}.')


def wanted(config: ml_collections.ConfigDict) -> bool:
  """Whether `config.distributed` (valid) asks for `jax.distributed.initialize`."""
  if config.initialize != 'auto':
    return config.initialize == 'always'
  configured = (config.coordinator_address, config.num_processes, config.process_id)
  return any(value is not None for value in configured) or cluster_environment() is not None


def initialize(config: ml_collections.ConfigDict) -> None:
  """Joins this process to the others of its run when `config.distributed` or the environment says there
  are others; a lone process goes on untouched. Call it first, before any JAX computation (a notebook: in
  a fresh kernel); calling it again is harmless."""
  settings = config.distributed
  check(settings)
  if not wanted(settings) or jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes, process_id=settings.process_id)
  except ValueError as error:  # what neither the config nor a detected cluster gave
    raise config_utils.ConfigError(
        f'jax.distributed.initialize: {error} No cluster environment (SLURM, Open MPI, Cloud TPU) was detected: '
        'set config.distributed.coordinator_address, num_processes and process_id (launch/local_processes.sh '
        'does), or config.distributed.initialize=never for one process.') from None
  except RuntimeError as error:  # JAX already ran something in this process
    raise RuntimeError(f'{error} (call lightcls.distributed.initialize first; in a notebook, restart the kernel)'
                       ) from None
  logging.info('Process %d of %d (%s), with %d of the %d devices: %s.', jax.process_index(), jax.process_count(),
               cluster_environment() or 'config.distributed', jax.local_device_count(), jax.device_count(),
               ', '.join(str(d) for d in jax.local_devices()))
