"""diffusers ``DiTTransformer2DModel`` and ``AutoencoderKL`` checkpoints -> our Flax params.

From a downloaded DiT pipeline (``huggingface-cli download facebook/DiT-XL-2-256
--local-dir dit-xl-2-256``, done on a machine with internet) to an orbax checkpoint::

    jaxunlearn convert-dit dit-xl-2-256 dit-xl-2-256-flax

or in Python::

    model, params = load_diffusers_dit('dit-xl-2-256')        # its transformer/ folder
    vae, vae_params = load_diffusers_vae('dit-xl-2-256')      # its vae/ folder
    save_dit_checkpoint('dit-xl-2-256-flax', model, params, vae, vae_params)
    model, params, vae, vae_params = load_dit_checkpoint('dit-xl-2-256-flax')

Every PyTorch tensor must land on exactly one Flax parameter of the same shape and every
parameter must be filled, or the error lists what does not match. diffusers stores the
DiT's timestep/class embedder once per block (copies of one set of weights in a converted
checkpoint); :func:`convert_dit_params` checks the copies are equal and keeps one (see
:mod:`jaxunlearn.models.dit`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.convert._place import (check_placed, config_kwargs, flax_targets,
                                        place_tensors, read_diffusers_folder, torch_to_flax)
from jaxunlearn.models.dit import DiT
from jaxunlearn.models.vae import AutoencoderKL

_DIT_COPIED = ('num_attention_heads', 'attention_head_dim', 'in_channels', 'out_channels',
               'num_layers', 'dropout', 'attention_bias', 'sample_size', 'patch_size',
               'num_embeds_ada_norm', 'norm_eps')
_DIT_REQUIRED = {'activation_fn': ('gelu-approximate',), 'norm_type': ('ada_norm_zero',),
                 'norm_elementwise_affine': (False,)}
# upcast_attention: our softmax is float32 whatever the dtype; norm_num_groups: unused by DiT.
_DIT_IGNORED = ('upcast_attention', 'norm_num_groups')

_VAE_COPIED = ('in_channels', 'out_channels', 'block_out_channels', 'layers_per_block',
               'latent_channels', 'norm_num_groups', 'sample_size', 'scaling_factor',
               'shift_factor', 'use_quant_conv', 'use_post_quant_conv',
               'mid_block_add_attention')
_VAE_REQUIRED = {'act_fn': ('silu', 'swish')}
# force_upcast: a float16 hint; latents_mean/std: used by some pipelines, not by the model.
_VAE_IGNORED = ('force_upcast', 'latents_mean', 'latents_std', 'down_block_types',
                'up_block_types')

_EMBEDDER = re.compile(r'transformer_blocks\.(\d+)\.norm1\.emb\.(.+)')


def dit_config(config: dict) -> dict:
  """:class:`DiT` keyword arguments for a diffusers ``DiTTransformer2DModel`` config."""
  return config_kwargs(config, _DIT_COPIED, _DIT_REQUIRED, _DIT_IGNORED, 'DiTTransformer2DModel')


def vae_config(config: dict) -> dict:
  """:class:`AutoencoderKL` keyword arguments for a diffusers ``AutoencoderKL`` config."""
  for key, kind in (('down_block_types', 'DownEncoderBlock2D'),
                    ('up_block_types', 'UpDecoderBlock2D')):
    bad = sorted(set(config.get(key, [kind])) - {kind})
    if bad:
      raise ValueError(f'AutoencoderKL {key} {bad} are not supported (only {kind})')
  return config_kwargs(config, _VAE_COPIED, _VAE_REQUIRED, _VAE_IGNORED, 'AutoencoderKL')


def _numpy(tensor) -> np.ndarray:
  return np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, 'detach') else tensor)


def embedders_tied(state_dict: dict) -> bool:
  """Whether every block's timestep/class embedder holds block 0's weights."""
  first = {m.group(2): _numpy(v) for k, v in state_dict.items()
           if (m := _EMBEDDER.fullmatch(k)) and m.group(1) == '0'}
  return all(np.array_equal(_numpy(v), first.get(m.group(2)))
             for k, v in state_dict.items() if (m := _EMBEDDER.fullmatch(k)))


def _shapes(model, *args):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *args))['params']


def convert_dit_params(state_dict: dict, model: DiT):
  """The params of ``model`` from a diffusers ``DiTTransformer2DModel`` state dict.

  Raises:
    ValueError: tensors left over, params missing, shapes that differ, or (for a model
      with one shared embedder) blocks whose embedders differ.
  """
  s = model.sample_size
  targets = flax_targets(_shapes(model, jnp.zeros((1, s, s, model.in_channels)),
                                 jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)))
  if model.per_block_embedding:
    def name_of(key):
      return key.replace('.', '_')
  else:
    if not embedders_tied(state_dict):
      raise ValueError('the blocks of this checkpoint have different timestep/class '
                       'embedders (transformer_blocks.i.norm1.emb): convert it into a '
                       'DiT(per_block_embedding=True)')

    def name_of(key):
      m = _EMBEDDER.fullmatch(key)
      if m is None:
        return key.replace('.', '_')
      return 'emb_' + m.group(2).replace('.', '_') if m.group(1) == '0' else None

  params, unused, wrong = place_tensors(state_dict, targets, name_of, torch_to_flax)
  check_placed('DiT', unused, targets, wrong)
  return params


# Attention names of checkpoints saved before diffusers 0.14 (sd-vae-ft-ema among them).
_OLD_ATTENTION = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


def _vae_key(key: str) -> str:
  parts = key.split('.')
  if 'attentions' in parts and len(parts) >= 2 and parts[-2] in _OLD_ATTENTION:
    parts[-2:-1] = _OLD_ATTENTION[parts[-2]].split('.')
  return '_'.join(parts)


def convert_vae_params(state_dict: dict, model: AutoencoderKL):
  """The params of ``model`` from a diffusers ``AutoencoderKL`` state dict (current or
  pre-0.14 attention names)."""
  size = 2 ** (len(model.block_out_channels) - 1)
  targets = flax_targets(_shapes(model, jnp.zeros((1, size, size, model.in_channels))))

  def to_flax(value, path):
    if path[-1] == 'kernel' and value.ndim == 4 and 'attentions_0' in path:
      value = value[:, :, 0, 0]  # an attention projection stored as a 1x1 conv
    return torch_to_flax(value, path)

  params, unused, wrong = place_tensors(state_dict, targets, _vae_key, to_flax)
  check_placed('AutoencoderKL', unused, targets, wrong)
  return params


def load_diffusers_dit(path: str | Path, time_freq_shift: float = 0.0):
  """``(DiT, params)`` from a ``DiTTransformer2DModel.save_pretrained`` folder or a DiT
  pipeline folder (its ``transformer/``); one shared embedder when the blocks' copies are
  equal (every released checkpoint), else one per block. ``time_freq_shift``: 0 (default)
  computes the timestep features as the original DiT code that trained facebook/DiT-*
  did, 1 as diffusers does (for a model trained with diffusers; see
  :mod:`jaxunlearn.models.dit`)."""
  config, state_dict = read_diffusers_folder(path, 'transformer', 'DiTTransformer2DModel')
  model = DiT(**dit_config(config), time_freq_shift=time_freq_shift,
              per_block_embedding=not embedders_tied(state_dict))
  return model, convert_dit_params(state_dict, model)


def load_diffusers_vae(path: str | Path):
  """``(AutoencoderKL, params)`` from an ``AutoencoderKL.save_pretrained`` folder or a
  pipeline folder (its ``vae/``)."""
  config, state_dict = read_diffusers_folder(path, 'vae', 'AutoencoderKL')
  model = AutoencoderKL(**vae_config(config))
  return model, convert_vae_params(state_dict, model)


_FIELDS = {'dit': DiT, 'vae': AutoencoderKL}


def _module_config(module) -> dict:
  keep = [f for f in module.__dataclass_fields__ if f not in ('parent', 'name', 'dtype')]
  return {f: (list(v) if isinstance(v := getattr(module, f), tuple) else v) for f in keep}


def save_dit_checkpoint(out_dir: str | Path, model: DiT, params, vae: AutoencoderKL | None = None,
                        vae_params=None) -> Path:
  """Writes ``config.json`` (both models' attributes) and an orbax checkpoint of the params
  to ``out_dir``; :func:`load_dit_checkpoint` reads them back."""
  from jaxunlearn.checkpoint import save_variables, write_json_atomic
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  config = {'dit': _module_config(model)}
  tree = {'dit': params}
  if vae is not None:
    config['vae'], tree['vae'] = _module_config(vae), vae_params
  save_variables(out / 'params', tree)
  write_json_atomic(out / 'config.json', config)
  return out


def load_dit_checkpoint(path: str | Path):
  """``(dit, dit_params, vae or None, vae_params or None)`` from :func:`save_dit_checkpoint`."""
  from jaxunlearn.checkpoint import load_variables
  path = Path(path)
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {path}: give a folder written by '
                            'jaxunlearn convert-dit (save_dit_checkpoint)')
  config = json.loads((path / 'config.json').read_text())
  models = {k: _FIELDS[k](**{f: tuple(v) if isinstance(v, list) else v
                              for f, v in config[k].items()}) for k in config}
  tree = load_variables(path / 'params')
  return models['dit'], tree['dit'], models.get('vae'), tree.get('vae')
