"""Checkpoints with Orbax: the latest (to resume) and the best by validation top-1 are kept."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from lightcls.models import mutual

BEST_METRIC = 'eval/top1'


def create_manager(workdir: str, keep_best: int = 1) -> ocp.CheckpointManager:
  """A manager of `workdir/checkpoints` keeping the latest checkpoint and the `keep_best` best ones.

  A preservation policy decides what is kept: `max_to_keep` + `best_fn` alone would delete the latest
  checkpoint whenever it is not among the best, and with it the ability to resume. `best_fn` is still
  given: without it Orbax does not write the metrics to disk, and a resumed run could not rank (and
  would delete) the checkpoints of the run before it.
  """
  score = lambda metrics: metrics[BEST_METRIC]
  preserve = policies.AnyPreservationPolicy([
      policies.LatestN(1),
      policies.BestN(get_metric_fn=score, n=keep_best, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=preserve, best_fn=score, best_mode='max',
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               item_names=('state', 'meta'), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any],
         metrics: dict[str, float]) -> None:
  """Saves asynchronously; `meta` holds the host-side loop state (JSON), `metrics` ranks the best."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               metrics=metrics)


def restore(manager: ocp.CheckpointManager, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
  """Restores checkpoint `step` into the structure, dtypes and shardings of `like` (any device count)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                           meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def read(workdir: str, step: int | None = None) -> tuple[dict[str, Any], dict[str, Any], int]:
  """(state, meta, step) of another run's checkpoint `step`, or of its best one (the latest if none is
  ranked), as plain nested dicts of arrays, without knowing the run's model."""
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'{workdir} holds no lightcls checkpoints (no {directory}/)')
  options = ocp.CheckpointManagerOptions(read_only=True, best_fn=lambda m: m[BEST_METRIC], best_mode='max')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'), options=options)
  if step is None:
    step = manager.best_step() or manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'{directory} holds no complete checkpoint')
  elif step not in manager.all_steps():
    raise ValueError(f'{workdir} has no checkpoint of step {step}; it has steps {sorted(manager.all_steps())}.')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                           meta=ocp.args.JsonRestore()))
  manager.close()
  return restored['state'], restored['meta'], step


def restore_variables(workdir: str, member: int = 0) -> dict[str, Any]:
  """`params` and `batch_stats` of another run's best checkpoint (its latest if none is ranked); of a
  mutual-learning run, those of its member `member` (0: the model, 1: its peer)."""
  state = read(workdir)[0]
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  return mutual.member_variables(variables, member) if mutual.is_pair(variables['params']) else variables
