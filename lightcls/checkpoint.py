"""Checkpoints with Orbax: the latest (to resume) and the best by validation top-1 are kept."""
from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
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
  # cleanup_tmp_directories: a save cut short (a killed process) leaves a temporary directory, never a
  # step directory; the next run deletes it.
  options = ocp.CheckpointManagerOptions(preservation_policy=preserve, best_fn=score, best_mode='max',
                                         create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')), options=options,
                               item_handlers={'state': ocp.StandardCheckpointHandler(),
                                              'meta': ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any],
         metrics: dict[str, float] | None) -> None:
  """Saves asynchronously; `meta` holds the host-side loop state (JSON), `metrics` ranks the best (None for
  a checkpoint between evaluations: kept only while it is the latest)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               metrics=metrics)


def incompatibility(manager: ocp.CheckpointManager, step: int, like: Any) -> str | None:
  """How checkpoint `step` differs from the state `like` (other model, classes, optimizer, EMA), in a few
  examples; None if it fits. Weights are compared by name and shape; the optimizer state, whose containers
  Orbax stores in its own form, by the shapes it holds (in this version's layout or the one before it)."""
  saved = manager.item_metadata(step)['state']
  wanted = flax.serialization.to_state_dict(like)
  differences = []
  for part in ('params', 'batch_stats', 'ema'):
    ours, theirs = _shapes(wanted.get(part)), _shapes(saved.get(part))
    differences += [f'{part}{key}: checkpoint {theirs.get(key, "none")}, this config {ours.get(key, "none")}'
                    for key in sorted(ours.keys() | theirs.keys()) if ours.get(key) != theirs.get(key)]
  if not differences and _optimizer_layout(saved, abstract(like)) is None:
    differences.append('the optimizer state (another optimizer.name, or options that add state)')
  if not differences:
    return None
  return f'{len(differences)} differences, e.g. ' + '; '.join(differences[:3])


def _optimizer_layout(saved: Any, target: Any) -> Any:
  """The abstract state to restore checkpoint metadata `saved` into: `target` (an `abstract` state), or
  `target` with its optimizer moments per parameter (`_per_parameter_moments`); None if neither holds its
  shapes."""
  if not hasattr(target, 'opt_state'):  # not a train state
    return target
  theirs = sorted(_shapes(saved['opt_state']).values())
  for layout in (target, _per_parameter_moments(target)):
    if sorted(_shapes(flax.serialization.to_state_dict(layout)['opt_state']).values()) == theirs:
      return layout
  return None


def _per_parameter_moments(state: Any) -> Any:
  """Abstract `state` with the optimizer's moments as checkpoints before 2026-11-24 hold them: a tree of
  arrays like `params`, where this version keeps one vector over all parameters (`optim`, optax.flatten).
  Those vectors are the optimizer state's only arrays of the parameter count's length."""
  size = sum(leaf.size for leaf in jax.tree.leaves(state.params))

  def per_parameter(moment):
    if moment.shape != (size,):
      return moment
    return jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, moment.dtype, sharding=p.sharding), state.params)
  return state.replace(opt_state=jax.tree.map(per_parameter, state.opt_state))


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if hasattr(leaf, 'shape')}


def abstract(state: Any) -> Any:
  """The shapes, dtypes and shardings of `state`: what a restore needs of it, kept after its arrays are gone
  (the train step donates them)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def committed_steps(workdir: str) -> list[int]:
  """The steps of the complete checkpoints in `workdir` (a save cut short leaves only a temporary directory)."""
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def restore(manager: ocp.CheckpointManager, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
  """Restores checkpoint `step` into the structure, dtypes and shardings of `like` (arrays or their
  `abstract`; any device count). A checkpoint with per-parameter optimizer moments (written before
  2026-11-24) is restored in that layout, then its moments are joined into this version's vectors."""
  target = abstract(like)
  layout = _optimizer_layout(manager.item_metadata(step)['state'], target) or target
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(layout),
                                                           meta=ocp.args.JsonRestore()))
  state = restored['state']
  if jax.tree.structure(layout) != jax.tree.structure(target):
    concatenated = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
    join = lambda moment, saved: (saved if hasattr(saved, 'shape') else
                                  jax.jit(concatenated, out_shardings=moment.sharding)(saved))
    state = state.replace(opt_state=jax.tree.map(join, target.opt_state, state.opt_state))
  return state, restored['meta']


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
  # Onto this process's first device when the devices that saved it are not all here (a run of 8 devices
  # or of several hosts, read on one).
  fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(fallback_sharding=fallback), meta=ocp.args.JsonRestore()))
  manager.close()
  return restored['state'], restored['meta'], step


def restore_variables(workdir: str, member: int = 0) -> dict[str, Any]:
  """`params` and `batch_stats` of another run's best checkpoint (its latest if none is ranked); of a
  mutual-learning run, those of its member `member` (0: the model, 1: its peer)."""
  state = read(workdir)[0]
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  return mutual.member_variables(variables, member) if mutual.is_pair(variables['params']) else variables
