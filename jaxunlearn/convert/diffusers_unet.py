"""diffusers ``UNet2DModel`` checkpoints -> :class:`jaxunlearn.models.unet.UNet2D` params.

    model, params = load_diffusers_unet('path/to/save_pretrained_folder')
    eps = model.apply({'params': params}, x_nhwc, t, class_labels)

Works from a ``save_pretrained`` folder (``config.json`` and
``diffusion_pytorch_model.safetensors``, or ``.bin`` with torch installed) or from a state
dict of numpy/torch arrays and the config dict. Every PyTorch tensor must land on exactly
one Flax parameter of the same shape and every parameter must be filled, or the error
lists what does not match. PyTorch is not needed for safetensors files.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.convert._place import place_tensors
from jaxunlearn.models.unet import UNet2D

# UNet2DModel config keys and what we do with them.
_COPIED = ('in_channels', 'out_channels', 'block_out_channels', 'down_block_types',
           'up_block_types', 'layers_per_block', 'attention_head_dim', 'norm_num_groups',
           'attn_norm_num_groups', 'norm_eps', 'flip_sin_to_cos', 'freq_shift',
           'time_embedding_dim', 'mid_block_scale_factor', 'resnet_time_scale_shift',
           'add_attention', 'center_input_sample', 'dropout', 'num_class_embeds',
           'sample_size')
_REQUIRED = {'time_embedding_type': ('positional',), 'class_embed_type': (None,),
             'downsample_type': ('conv',), 'upsample_type': ('conv',),
             'act_fn': ('silu', 'swish'), 'downsample_padding': (1,),
             'mid_block_type': ('UNetMidBlock2D',)}
_IGNORED = ('num_train_timesteps',)


def unet_config(config: dict) -> dict:
  """:class:`UNet2D` keyword arguments for a diffusers ``UNet2DModel`` config.

  Raises:
    ValueError: an option our UNet does not implement (Fourier or learned time embeddings,
      timestep/identity class embeddings, resnet up/down sampling, other activations or
      block types) or a key we do not know.
  """
  out = {}
  for key, value in config.items():
    if key in _COPIED:
      out[key] = tuple(value) if isinstance(value, list) else value
    elif key in _REQUIRED:
      if value not in _REQUIRED[key]:
        raise ValueError(f'UNet2DModel option {key}={value!r} is not supported by '
                         f'jaxunlearn.models.UNet2D (supported: {_REQUIRED[key]})')
    elif key not in _IGNORED and not key.startswith('_'):  # '_...': diffusers' bookkeeping
      raise ValueError(f'unknown UNet2DModel config key {key!r}')
  return out


def _flax_name(path) -> str:
  """The diffusers-style dotted name of a flax param path, '.'->'_' (leaf as torch's)."""
  *modules, leaf = (p.key for p in path)
  return '_'.join([*modules, {'kernel': 'weight', 'scale': 'weight',
                              'embedding': 'weight'}.get(leaf, leaf)])


def _to_flax(tensor: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == 'kernel' and tensor.ndim == 4:  # conv: OIHW -> HWIO
    return tensor.transpose(2, 3, 1, 0)
  if leaf == 'kernel':  # linear: (out, in) -> (in, out)
    return tensor.T
  return tensor


def convert_unet_params(state_dict: dict, model: UNet2D, image_size: int | None = None):
  """The params of ``model`` from a diffusers ``UNet2DModel`` state dict (arrays or torch
  tensors, keyed as PyTorch names them).

  Raises:
    ValueError: tensors left over, params missing, or shapes that differ (all listed).
  """
  size = image_size or model.sample_size or 2 ** len(model.block_out_channels)
  size = size if isinstance(size, int) else size[0]
  args = (jnp.zeros((1, size, size, model.in_channels)), jnp.zeros((1,)))
  if model.num_class_embeds is not None:
    args += (jnp.zeros((1,), jnp.int32),)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))['params']
  targets = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    name = _flax_name(path)
    if name in targets:
      raise AssertionError(f'two flax params map to {name}')  # a bug in UNet2D's names
    targets[name] = (tuple(p.key for p in path), leaf)
  params, unused, wrong = place_tensors(state_dict, targets, lambda k: k.replace('.', '_'),
                                        lambda value, path: _to_flax(value, path[-1]))
  if unused or targets or wrong:
    raise ValueError('the state dict does not fit this UNet2D: '
                     f'{len(unused)} tensors without a param {unused[:8]}, '
                     f'{len(targets)} params without a tensor '
                     f'{["/".join(p) for p, _ in list(targets.values())[:8]]}, '
                     f'{len(wrong)} shapes differ {wrong[:8]}; is the config the '
                     'checkpoint\'s own?')
  return params


def load_diffusers_unet(path: str | Path):
  """``(UNet2D, params)`` from a diffusers ``save_pretrained`` folder of a ``UNet2DModel``
  (or its ``unet/`` subfolder in a pipeline folder)."""
  path = Path(path)
  if (path / 'unet' / 'config.json').is_file():
    path = path / 'unet'
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {path}: give the folder that '
                            'UNet2DModel.save_pretrained wrote')
  config = json.loads((path / 'config.json').read_text())
  if config.get('_class_name', 'UNet2DModel') != 'UNet2DModel':
    raise ValueError(f'{path} holds a {config["_class_name"]}, not a UNet2DModel')
  model = UNet2D(**unet_config(config))
  weights = path / 'diffusion_pytorch_model.safetensors'
  if weights.is_file():
    from safetensors.numpy import load_file
    state_dict = load_file(str(weights))
  elif (path / 'diffusion_pytorch_model.bin').is_file():
    import torch
    state_dict = torch.load(path / 'diffusion_pytorch_model.bin', map_location='cpu',
                            weights_only=True)
  else:
    raise FileNotFoundError(f'no diffusion_pytorch_model.safetensors or .bin in {path}')
  return model, convert_unet_params(state_dict, model)
