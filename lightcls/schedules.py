"""Learning-rate schedules, evaluated on the host (a Python float per step; see DESIGN.md)."""
from __future__ import annotations

import bisect
from typing import Callable, Sequence

import ml_collections

Schedule = Callable[[int], float]


def constant(base_lr: float) -> Schedule:
  return lambda step: base_lr


def multistep(base_lr: float, milestones: Sequence[int], gamma: float) -> Schedule:
  """PyTorch's MultiStepLR: the rate is multiplied by gamma at each milestone step."""
  milestones = sorted(milestones)
  return lambda step: base_lr * gamma ** bisect.bisect_right(milestones, step)


SCHEDULES = ('constant', 'multistep')


def create_schedule(config: ml_collections.ConfigDict, base_lr: float,
                    milestone_steps: Sequence[int]) -> Schedule:
  """The schedule named by a `config.schedule` section, with milestones already resolved to steps."""
  if config.name == 'constant':
    return constant(base_lr)
  if config.name == 'multistep':
    return multistep(base_lr, milestone_steps, config.gamma)
  raise ValueError(f'unknown schedule {config.name!r}; choose one of {SCHEDULES}')
