"""What every converter does: read a diffusers folder, put each PyTorch tensor on the one
Flax variable it names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import jax
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


def flax_targets(shapes) -> dict:
  """``{diffusers-style name: (flax path, shape)}`` for the param shapes of a model whose
  submodule names are diffusers' attribute names with '.' -> '_' (leaf as PyTorch names
  it: kernel, scale and embedding are 'weight')."""
  targets = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    *modules, last = (p.key for p in path)
    name = '_'.join([*modules, {'kernel': 'weight', 'scale': 'weight',
                                'embedding': 'weight'}.get(last, last)])
    if name in targets:
      raise AssertionError(f'two flax params map to {name}')  # a bug in a model's names
    targets[name] = (tuple(p.key for p in path), leaf)
  return targets


def torch_to_flax(tensor: np.ndarray, path: tuple) -> np.ndarray:
  """PyTorch layout -> Flax: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  if path[-1] == 'kernel' and tensor.ndim == 4:
    return tensor.transpose(2, 3, 1, 0)
  if path[-1] == 'kernel':
    return tensor.T
  return tensor


def check_placed(kind: str, unused: list, targets: dict, wrong: list) -> None:
  """Raises ValueError listing what did not fit, if anything."""
  if unused or targets or wrong:
    raise ValueError(f'the state dict does not fit this {kind}: '
                     f'{len(unused)} tensors without a param {unused[:8]}, '
                     f'{len(targets)} params without a tensor '
                     f'{["/".join(p) for p, _ in list(targets.values())[:8]]}, '
                     f'{len(wrong)} shapes differ {wrong[:8]}; is the config the '
                     'checkpoint\'s own?')


def read_diffusers_folder(path: str | Path, subfolder: str, class_name: str):
  """``(config, state_dict)`` of a diffusers ``save_pretrained`` folder of a
  ``class_name``, or of a pipeline folder holding it in ``subfolder/``. Safetensors files
  load without torch; ``.bin`` files need it."""
  path = Path(path)
  if (path / subfolder / 'config.json').is_file():
    path = path / subfolder
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {path} or {path / subfolder}: give the folder '
                            f'that {class_name}.save_pretrained (or a pipeline) wrote')
  config = json.loads((path / 'config.json').read_text())
  if config.get('_class_name', class_name) != class_name:
    raise ValueError(f'{path} holds a {config["_class_name"]}, not a {class_name}')
  weights = path / 'diffusion_pytorch_model.safetensors'
  if weights.is_file():
    from safetensors.numpy import load_file
    return config, load_file(str(weights))
  if (path / 'diffusion_pytorch_model.bin').is_file():
    import torch
    return config, torch.load(path / 'diffusion_pytorch_model.bin', map_location='cpu',
                              weights_only=True)
  raise FileNotFoundError(f'no diffusion_pytorch_model.safetensors or .bin in {path}')


def config_kwargs(config: dict, copied, required: dict, ignored, kind: str) -> dict:
  """Model keyword arguments from a diffusers config: ``copied`` keys pass (lists as
  tuples), ``required`` ones must hold one of the values we implement, ``ignored`` and
  diffusers' ``_...`` bookkeeping are dropped, any other key is an error."""
  out = {}
  for key, value in config.items():
    if key in copied:
      out[key] = tuple(value) if isinstance(value, list) else value
    elif key in required:
      if value not in required[key]:
        raise ValueError(f'{kind} option {key}={value!r} is not supported (supported: '
                         f'{required[key]})')
    elif key not in ignored and not key.startswith('_'):
      raise ValueError(f'unknown {kind} config key {key!r}')
  return out


def convert_module_params(state_dict: dict, model, init_args, kind: str,
                          name_of=lambda k: k.replace('.', '_')):
  """The params of flax ``model`` (initialised on ``init_args``, shapes only) from a PyTorch
  state dict whose keys are its submodule names with '.' for '_' (``name_of``); every tensor
  must land on one param of its shape and every param be filled (ValueError otherwise)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *init_args))['params']
  targets = flax_targets(shapes)
  params, unused, wrong = place_tensors(state_dict, targets, name_of, torch_to_flax)
  check_placed(kind, unused, targets, wrong)
  return params
