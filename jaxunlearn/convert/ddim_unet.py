"""The references' DDPM checkpoints (SalUn's and SFR-on's ``DDPM/`` code) as
:class:`jaxunlearn.models.ddim_unet.RefDDPMUNet` variables.

Their ``train.py`` saves ``ckpts/ckpt.pth`` as a list ``[model.state_dict(),
optimizer.state_dict(), step]`` plus, with ``model.ema: True``, the EMA helper's shadow
weights last. The model is wrapped in ``DataParallel``, so the state dict's keys start with
``module.``; the shadow's do not. Their unlearning code and their sampling config
(``cifar10_sample.yml``: ``ema: False``) use ``states[0]``, the raw weights; ``ema=True``
takes the shadow instead.

    model, variables = load_reference_ddpm('results/cifar10/pretrain/.../ckpts/ckpt.pth')

The structure (``ch``, ``ch_mult``, blocks per level, classes, channels, which levels have
attention, resampling convs) is read from the tensors; what the tensors cannot say is an
argument: the image side ``resolution`` (32 for CIFAR-10), ``dropout`` (their 0.1) and
``groups`` (their 32). Every tensor must land on one variable and every variable receive
one, or the conversion fails listing what did not fit.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np

from jaxunlearn.convert._place import check_placed, flax_targets, place_tensors, torch_to_flax
from jaxunlearn.models.ddim_unet import RefDDPMUNet


def _strip(state_dict: dict) -> dict:
  return {re.sub(r'^(module\.)+', '', k): v for k, v in state_dict.items()}


def reference_unet_config(state_dict: dict, resolution: int = 32, dropout: float = 0.1,
                          groups: int = 32) -> dict:
  """:class:`RefDDPMUNet` keyword arguments read from a state dict's tensors."""
  sd = _strip(state_dict)
  for key in ('conv_in.weight', 'conv_out.weight', 'classes_emb.weight', 'null_classes_emb'):
    if key not in sd:
      raise ValueError(f'not a checkpoint of the references\' Conditional_Model: no {key!r} '
                       f'among its {len(sd)} tensors (first: {list(sd)[:4]})')
  shape = lambda k: tuple(np.shape(sd[k]))
  ch = shape('conv_in.weight')[0]
  levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r'down\.(\d+)\.', k))})
  blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r'down\.0\.block\.(\d+)\.', k))})
  if not levels or not blocks:
    raise ValueError('the state dict has no down.{i}.block.{j} tensors')
  mult = tuple(shape(f'down.{i}.block.0.conv1.weight')[0] // ch for i in levels)
  attn = tuple(resolution // 2 ** i for i in levels if f'down.{i}.attn.0.q.weight' in sd)
  return dict(ch=ch, ch_mult=mult, num_res_blocks=len(blocks), attn_resolutions=attn,
              dropout=dropout, resolution=resolution,
              num_classes=shape('classes_emb.weight')[0],
              in_channels=shape('conv_in.weight')[1], out_ch=shape('conv_out.weight')[0],
              resamp_with_conv=len(levels) < 2 or 'down.0.downsample.conv.weight' in sd,
              groups=groups)


def convert_reference_unet(state_dict: dict, model: RefDDPMUNet) -> dict:
  """``{'params': ...}`` of ``model`` from a state dict of the references' layout
  (``module.`` prefixes allowed); ValueError listing every misfit."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          np.zeros((1, model.resolution, model.resolution, model.in_channels),
                                   np.float32), np.zeros((1,)), np.zeros((1,), np.int32))
  targets = flax_targets(shapes['params'])
  tree, unused, wrong = place_tensors(_strip(state_dict), targets,
                                      lambda key: key.replace('.', '_'), torch_to_flax)
  check_placed('reference DDPM UNet', unused, targets, wrong)
  return {'params': tree}


def read_reference_checkpoint(path: str | Path, ema: bool = False) -> dict:
  """The model's state dict from a ``ckpt.pth`` of the references' ``train.py`` (or a
  bare state dict): ``states[0]``, or with ``ema`` the EMA shadow ``states[-1]``."""
  import torch
  path = Path(path)
  if path.is_dir():
    path = next((p for p in (path / 'ckpts' / 'ckpt.pth', path / 'ckpt.pth') if p.is_file()),
                path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file (the ckpts/ckpt.pth the references\' '
                            'train.py writes, or its run folder)')
  states = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(states, dict):
    if ema:
      raise ValueError(f'{path} holds one state dict, no EMA weights; drop ema')
    return states
  if not isinstance(states, (list, tuple)) or not states or not isinstance(states[0], dict):
    raise ValueError(f'{path} is not a checkpoint of the references\' train.py (expected a '
                     'list [state_dict, optimizer, step, (ema)])')
  if ema:
    if len(states) < 4 or not isinstance(states[-1], dict):
      raise ValueError(f'{path} holds no EMA weights (saved with model.ema: False); drop ema')
    return states[-1]
  return states[0]


def load_reference_ddpm(path: str | Path, *, resolution: int = 32, dropout: float = 0.1,
                        groups: int = 32, ema: bool = False):
  """``(RefDDPMUNet, variables)`` of a checkpoint the references' DDPM code saved."""
  state_dict = read_reference_checkpoint(path, ema)
  model = RefDDPMUNet(**reference_unet_config(state_dict, resolution, dropout, groups))
  return model, convert_reference_unet(state_dict, model)
