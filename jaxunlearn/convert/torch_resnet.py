"""The references' PyTorch ResNet-18 checkpoints as our Flax ResNet variables.

Two state-dict layouts, as the two reference code bases save them:

- ``salun``: OPTML-Group/Unlearn-Saliency (and Unlearn-Sparse), torchvision's names with
  the CIFAR stem (``conv1``, ``bn1``, ``layer{1-4}.{j}.conv1/bn1/conv2/bn2``,
  ``downsample.0/1``, ``fc``) and the input normalisation inside the network
  (``normalize.mean`` / ``normalize.std`` buffers). ``main_train.py`` saves
  ``{'state_dict': ..., 'optimizer': ..., ...}``.
- ``sfron``: K1nght/Unified-Unlearning-w-Remain-Geometry, the kuangliu CIFAR ResNet
  (``shortcut.0/1``, ``linear``), saved as the bare state dict; its normalisation lives in
  the data transforms (``dataset/cifar10.py``: std 0.2023, ...), so it is not in the file:
  :data:`SFRON_NORMALIZATION` holds it per dataset.

Either may carry ``module.`` prefixes (``DataParallel``). The structure (stage sizes,
width, classes) is read from the tensors; every tensor must land on one of our variables and
every variable must receive one, or the conversion fails saying which did not fit.

    converted = load_torch_resnet('resnet18_cifar10.pth.tar')
    converted.model, converted.variables   # a jaxunlearn.models.ResNet and its variables
    converted.mean, converted.std          # the input normalisation the weights expect

Images must be normalised as the checkpoint was trained: ``(x - mean) / std`` of pixels in
[0, 1] (``jaxunlearn run --original`` re-normalises its data so).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxunlearn.models.resnet import ResNet

# SFR-on's data transforms (dataset/cifar10.py:13-14, dataset/cifar100.py:13-14).
SFRON_NORMALIZATION = {
    'cifar10': ((0.491400808095932, 0.48215898871421814, 0.44653093814849854),
                (0.2023027539253235, 0.19941310584545135, 0.2009606957435608)),
    'cifar100': ((0.5070757865905762, 0.48655030131340027, 0.4409191310405731),
                 (0.20089693367481232, 0.19844233989715576, 0.20229683816432953)),
}


@dataclasses.dataclass(frozen=True)
class ConvertedResNet:
  """A converted checkpoint: ``model`` (a :class:`jaxunlearn.models.ResNet`), its flax
  ``variables`` (params and batch_stats), the per-channel ``mean`` and ``std`` its inputs
  are normalised with (None where the file does not say), and the ``layout`` read."""

  model: ResNet
  variables: Any
  mean: tuple | None
  std: tuple | None
  layout: str


def _state_dict(obj) -> dict:
  """The tensors of a loaded checkpoint: the dict itself, or its 'state_dict' / 'model' /
  'net' entry; ``module.`` prefixes dropped."""
  if isinstance(obj, dict):
    for key in ('state_dict', 'model_state_dict', 'model', 'net'):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not isinstance(obj, dict) or not obj:
    raise ValueError('the checkpoint holds no state dict (expected a dict of tensors, or one '
                     "under 'state_dict')")
  return {re.sub(r'^(module\.)+', '', k): v for k, v in obj.items()}


def _array(tensor) -> np.ndarray:
  if hasattr(tensor, 'detach'):
    tensor = tensor.detach().cpu().numpy()
  return np.asarray(tensor, np.float32)


def _layout(sd: dict) -> str:
  if 'fc.weight' in sd and 'conv1.weight' in sd:
    return 'salun'
  if 'linear.weight' in sd and 'conv1.weight' in sd:
    return 'sfron'
  raise ValueError('not a reference ResNet state dict: expected conv1.weight and fc.weight '
                   '(OPTML-Group/Unlearn-Saliency) or linear.weight (SFR-on\'s code); got keys '
                   f'{sorted(sd)[:8]}...')


def _our_name(key: str, layout: str) -> tuple[str, ...] | None:
  """The flax path (collection first) of a reference key, or None for bookkeeping."""
  if key.endswith('num_batches_tracked') or key.startswith('normalize.'):
    return None
  leaf_of = {'weight': 'kernel', 'bias': 'bias', 'running_mean': 'mean',
             'running_var': 'var'}
  parts = key.split('.')
  head = 'fc' if layout == 'salun' else 'linear'
  if parts[0] == head:
    return ('params', 'head', leaf_of[parts[1]])
  if parts[0] in ('conv1', 'bn1'):
    module, leaf = ('stem_conv' if parts[0] == 'conv1' else 'stem_bn'), parts[1]
    prefix = ()
  elif parts[0].startswith('layer') and len(parts) >= 4:
    prefix = (f'stage{parts[0][5:]}_block{int(parts[1]) + 1}',)
    sub, rest = parts[2], parts[3:]
    if sub in ('downsample', 'shortcut'):
      module = 'shortcut_conv' if rest[0] == '0' else 'shortcut_bn'
      leaf = rest[1]
    else:
      module, leaf = sub, rest[0]
  else:
    raise ValueError(f'unexpected key {key!r} in a {layout} ResNet state dict')
  is_bn = 'bn' in module
  if is_bn and leaf == 'weight':
    name = 'scale'
  else:
    name = leaf_of[leaf]
  collection = 'batch_stats' if leaf in ('running_mean', 'running_var') else 'params'
  return (collection, *prefix, module, name)


def convert_resnet_state_dict(state_dict: dict) -> ConvertedResNet:
  """A reference state dict (tensors or arrays) as our model and variables (module doc)."""
  import jax
  sd = _state_dict(state_dict)
  layout = _layout(sd)
  stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r'layer(\d+)\.', k))})
  blocks = [1 + max(int(k.split('.')[1]) for k in sd if k.startswith(f'layer{s}.'))
            for s in stages]
  width, channels = (int(n) for n in _array(sd['conv1.weight']).shape[:2])
  head = _array(sd['fc.weight' if layout == 'salun' else 'linear.weight'])
  if stages != list(range(1, len(stages) + 1)) or head.shape[1] != width * 2**(len(stages) - 1):
    raise ValueError(f'layers {stages} with a {head.shape[1]}-wide head do not form a CIFAR '
                     f'ResNet of width {width}')
  model = ResNet(num_classes=int(head.shape[0]), stage_sizes=tuple(blocks), width=width)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, 32, 32, channels), np.float32)))
  flat = {tuple(p.key for p in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  out, unused, wrong = {}, [], []
  for key, tensor in sd.items():
    path = _our_name(key, layout)
    if path is None:
      continue
    if path not in flat:
      unused.append(key)
      continue
    value = _array(tensor)
    if path[-1] == 'kernel':
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    if value.shape != flat[path].shape:
      wrong.append(f'{key} {value.shape} -> {"/".join(path)} {flat[path].shape}')
      continue
    out[path] = value
  missing = [p for p in flat if p not in out]
  if unused or missing or wrong:
    raise ValueError(f'the {layout} state dict does not fit a ResNet{tuple(blocks)} of width '
                     f'{width}: tensors without a variable {unused[:6]}, variables without a '
                     f'tensor {["/".join(p) for p in missing[:6]]}, shapes that differ '
                     f'{wrong[:6]}')
  variables: dict = {}
  for path, value in out.items():
    node = variables
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  mean = std = None
  if 'normalize.mean' in sd:
    mean = tuple(float(v) for v in _array(sd['normalize.mean']))
    std = tuple(float(v) for v in _array(sd['normalize.std']))
  return ConvertedResNet(model, variables, mean, std, layout)


def load_torch_resnet(path: str | Path, dataset: str | None = None) -> ConvertedResNet:
  """Reads a reference ResNet checkpoint (``torch.save`` file; loaded with
  ``weights_only=True``: no code in the file runs) and converts it. ``dataset`` ('cifar10'
  or 'cifar100') supplies the normalisation of SFR-on's checkpoints, which do not hold it."""
  try:
    import torch
  except ImportError:
    raise ImportError('reading a PyTorch checkpoint needs torch: pip install torch') from None
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such checkpoint file')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises several types for a file it cannot read
    raise ValueError(f'{path} is not a PyTorch checkpoint torch can read safely '
                     f'({type(e).__name__}: {str(e)[:200]})') from e
  converted = convert_resnet_state_dict(obj)
  if converted.mean is None and dataset in SFRON_NORMALIZATION:
    mean, std = SFRON_NORMALIZATION[dataset]
    converted = dataclasses.replace(converted, mean=mean, std=std)
  return converted
