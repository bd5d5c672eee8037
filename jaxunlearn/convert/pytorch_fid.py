"""pytorch-fid's Inception weights -> :class:`jaxunlearn.models.inception.FIDInceptionV3`.

    model, variables = load_fid_inception('pt_inception-2015-12-05-6726825d.pth')
    features = model.apply(variables, images_in_0_1)   # [N, 2048], FID's pool-3 features

The weight file is the one pytorch-fid downloads (``FID_WEIGHTS_URL``, the TF FID graph
ported to PyTorch); it must be on disk, nothing is downloaded here. Two key layouts are
read: the file's own (torchvision's names, ``Mixed_5b.branch1x1.conv.weight``) and the
``state_dict()`` of pytorch-fid's ``InceptionV3`` wrapper (``blocks.2.0.branch1x1...``,
which has no classifier; the ``fc`` layer is then left at zero). Every tensor must land on
exactly one variable of the same shape and every variable must be filled, or the error
lists what does not match. Reading a ``.pth`` file needs PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.convert._place import place_tensors
from jaxunlearn.models.inception import FIDInceptionV3

# pytorch-fid's InceptionV3 wrapper: blocks.<i>.<j> -> torchvision attribute (pools skipped).
_WRAPPER = {
    '0.0': 'Conv2d_1a_3x3', '0.1': 'Conv2d_2a_3x3', '0.2': 'Conv2d_2b_3x3',
    '1.0': 'Conv2d_3b_1x1', '1.1': 'Conv2d_4a_3x3',
    **{f'2.{j}': name for j, name in enumerate(
        ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d',
         'Mixed_6e'))},
    '3.0': 'Mixed_7a', '3.1': 'Mixed_7b', '3.2': 'Mixed_7c'}
# flax (collection, leaf) -> the torch leaf name.
_LEAVES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
           ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
           ('batch_stats', 'var'): 'running_var'}


def _torch_name(path) -> str:
  collection, *modules, leaf = (p.key for p in path)
  return '.'.join([*modules, _LEAVES[collection, leaf]])


def _canonical(key: str) -> str | None:
  """torchvision's name of a state-dict key; None for a key that holds no weight."""
  if key.endswith('num_batches_tracked'):
    return None
  if key.startswith('blocks.'):
    _, i, j, rest = key.split('.', 3)
    return f'{_WRAPPER.get(f"{i}.{j}", key)}.{rest}'
  return key


def _to_flax(value: np.ndarray, path: tuple) -> np.ndarray:
  if path[-1] == 'kernel':  # conv OIHW -> HWIO, linear (out, in) -> (in, out)
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  return value


def convert_fid_inception(state_dict: dict, model: FIDInceptionV3 | None = None) -> dict:
  """The variables (``params`` and ``batch_stats``) of ``model`` from pytorch-fid's state
  dict (numpy arrays or torch tensors).

  Raises:
    ValueError: tensors left over, variables missing, or shapes that differ (all listed).
  """
  model = model or FIDInceptionV3()
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 299, 299, 3)), preprocess=False))
  targets = {_torch_name(path): (tuple(p.key for p in path), leaf)
             for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  variables, unused, wrong = place_tensors(state_dict, targets, _canonical, _to_flax)
  if all(k.startswith('blocks.') for k in state_dict) and not unused and not wrong:
    for name in [n for n in targets if n.startswith('fc.')]:  # the wrapper has no classifier
      path, leaf = targets.pop(name)
      variables['params'].setdefault('fc', {})[path[-1]] = np.zeros(leaf.shape, np.float32)
  if unused or targets or wrong:
    raise ValueError('the state dict is not pytorch-fid\'s Inception '
                     '(pt_inception-2015-12-05): '
                     f'{len(unused)} tensors without a variable {unused[:8]}, '
                     f'{len(targets)} variables without a tensor {list(targets)[:8]}, '
                     f'{len(wrong)} shapes differ {wrong[:8]}. torchvision\'s ImageNet '
                     'Inception-v3 is a different network and gives FIDs no paper reports.')
  return variables


def load_fid_inception(path: str | Path):
  """``(FIDInceptionV3, variables)`` from pytorch-fid's weight file on disk
  (``pt_inception-2015-12-05-6726825d.pth``, or a ``.npz`` of the same state dict)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f'no FID Inception weights at {path}: download pytorch-fid\'s '
        'pt_inception-2015-12-05-6726825d.pth (pytorch_fid.inception.FID_WEIGHTS_URL) on '
        'a machine with internet and give its path')
  if path.suffix == '.npz':
    with np.load(path) as data:
      state_dict = dict(data)
  else:
    import torch
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
  model = FIDInceptionV3()
  return model, convert_fid_inception(state_dict, model)
