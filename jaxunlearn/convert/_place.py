"""What every converter does: put each PyTorch tensor on the one Flax variable it names."""

from __future__ import annotations

from typing import Callable

import numpy as np


def place_tensors(state_dict: dict, targets: dict, name_of: Callable[[str], str | None],
                  to_flax: Callable[[np.ndarray, tuple], np.ndarray]):
  """Places ``state_dict`` (numpy arrays or torch tensors) on ``targets``.

  Args:
    targets: ``{name: (flax path, shape struct)}``; each filled target is removed, so what
      is left afterwards had no tensor.
    name_of: a state-dict key -> its target name (None: a key that holds no weight).
    to_flax: ``(float32 array, flax path) -> array`` in Flax's layout.

  Returns:
    ``(nested dict of arrays, keys without a target, shape mismatches as text)``.
  """
  tree, unused, wrong = {}, [], []
  for key, tensor in state_dict.items():
    name = name_of(key)
    if name is None:
      continue
    if name not in targets:
      unused.append(key)
      continue
    path, leaf = targets.pop(name)
    value = np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, 'detach') else tensor,
                       np.float32)
    value = to_flax(value, path)
    if value.shape != leaf.shape:
      wrong.append(f'{key}: {value.shape} for {"/".join(path)} {leaf.shape}')
      continue
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  return tree, unused, wrong
