"""Deep mutual learning (seed 002): two models trained jointly on the same images as one Flax module.

The pair's variables hold each member under `members_0` and `members_1`; `member_variables` takes one out,
and that member alone is an ordinary model of its configuration (to evaluate, export or fine-tune).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax


class MutualPair(nn.Module):
  """Calls each member on the same images; returns their outputs as a tuple (logits or cosines)."""
  members: tuple[nn.Module, ...]

  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    return tuple(member(images, train=train) for member in self.members)


def member_variables(variables: dict[str, Any], index: int) -> dict[str, Any]:
  """The variables (params, batch_stats) of member `index` of a pair's variables."""
  name = f'members_{index}'
  if name not in variables.get('params', {}):
    raise ValueError(f'these variables are not of a mutual-learning pair with a member {index} '
                     f'(top-level entries: {sorted(variables.get("params", {}))})')
  return {collection: tree[name] for collection, tree in variables.items() if name in tree}


def is_pair(params: dict[str, Any]) -> bool:
  return 'members_0' in params
