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

from pathlib import Path

import jax.numpy as jnp

from jaxunlearn.convert._place import (config_kwargs, convert_module_params,
                                        read_diffusers_folder)
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
  return config_kwargs(config, _COPIED, _REQUIRED, _IGNORED, 'UNet2DModel')


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
  return convert_module_params(state_dict, model, args, 'UNet2D')


def load_diffusers_unet(path: str | Path):
  """``(UNet2D, params)`` from a diffusers ``save_pretrained`` folder of a ``UNet2DModel``
  (or its ``unet/`` subfolder in a pipeline folder)."""
  config, state_dict = read_diffusers_folder(path, 'unet', 'UNet2DModel')
  model = UNet2D(**unet_config(config))
  return model, convert_unet_params(state_dict, model)
