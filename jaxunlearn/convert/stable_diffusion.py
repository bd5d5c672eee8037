"""Stable Diffusion (diffusers layout) -> our Flax models: the UNet, the CLIP text encoder,
its tokenizer.

    unet, unet_params = load_diffusers_unet_condition('stable-diffusion-v1-5')   # unet/
    text, text_params = load_clip_text_encoder('stable-diffusion-v1-5')          # text_encoder/
    tokenizer = load_clip_tokenizer('stable-diffusion-v1-5')                     # tokenizer/
    states, _ = text.apply({'params': text_params}, tokenizer(['a photo of a cat']))
    eps = unet.apply({'params': unet_params}, latents_nhwc, t, states)

Each reads a pipeline folder (or the component's own folder) as ``save_pretrained`` writes
it: ``config.json`` and safetensors weights (``.bin`` with torch installed). Every PyTorch
tensor must land on exactly one Flax parameter of the same shape and every parameter must be
filled, or the error lists what does not fit. A config option our models do not implement
is an error, not a silently different model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxunlearn.convert._place import (config_kwargs, convert_module_params,
                                        read_diffusers_folder)
from jaxunlearn.models.clip_text import CLIPTextEncoder
from jaxunlearn.models.unet_condition import UNet2DCondition

# UNet2DConditionModel config keys: copied, required to hold a value we implement, ignored.
_UNET_COPIED = ('in_channels', 'out_channels', 'block_out_channels', 'down_block_types',
                'up_block_types', 'layers_per_block', 'attention_head_dim',
                'cross_attention_dim', 'transformer_layers_per_block', 'use_linear_projection',
                'norm_num_groups', 'norm_eps', 'flip_sin_to_cos', 'freq_shift',
                'mid_block_scale_factor', 'center_input_sample', 'dropout', 'upcast_attention',
                'sample_size')
_UNET_REQUIRED = {
    'act_fn': ('silu', 'swish'), 'downsample_padding': (1,),
    'mid_block_type': ('UNetMidBlock2DCrossAttn',), 'time_embedding_type': ('positional',),
    'only_cross_attention': (False,), 'mid_block_only_cross_attention': (None, False),
    'class_embed_type': (None,), 'num_class_embeds': (None,), 'addition_embed_type': (None,),
    'addition_time_embed_dim': (None,), 'encoder_hid_dim': (None,),
    'encoder_hid_dim_type': (None,), 'num_attention_heads': (None,),
    'dual_cross_attention': (False,), 'resnet_time_scale_shift': ('default',),
    'resnet_skip_time_act': (False,), 'resnet_out_scale_factor': (1, 1.0),
    'time_embedding_dim': (None,), 'time_embedding_act_fn': (None,),
    'timestep_post_act': (None,), 'time_cond_proj_dim': (None,), 'conv_in_kernel': (3,),
    'conv_out_kernel': (3,), 'projection_class_embeddings_input_dim': (None,),
    'attention_type': ('default',), 'class_embeddings_concat': (False,),
    'cross_attention_norm': (None,), 'reverse_transformer_layers_per_block': (None,)}
_UNET_IGNORED = ('addition_embed_type_num_heads',)


def _one_value(kwargs: dict, key: str) -> None:
  """A per-block list whose entries are all equal -> that value; different ones: error."""
  value = kwargs.get(key)
  if isinstance(value, tuple):
    if len(set(value)) != 1:
      raise ValueError(f'UNet2DConditionModel option {key}={list(value)} (a different value '
                       'per block) is not supported')
    kwargs[key] = value[0]


def unet_condition_config(config: dict) -> dict:
  """:class:`UNet2DCondition` keyword arguments for a diffusers ``UNet2DConditionModel``
  config (a ``unet/config.json``).

  Raises:
    ValueError: an option our UNet does not implement (SDXL's added embeddings, class
      embeddings, other block types, per-block layer counts, ...) or an unknown key.
  """
  kwargs = config_kwargs(config, _UNET_COPIED, _UNET_REQUIRED, _UNET_IGNORED,
                         'UNet2DConditionModel')
  for key in ('layers_per_block', 'cross_attention_dim', 'transformer_layers_per_block'):
    _one_value(kwargs, key)
  return kwargs


def convert_unet_condition_params(state_dict: dict, model: UNet2DCondition,
                                  latent_size: int | None = None):
  """The params of ``model`` from a diffusers ``UNet2DConditionModel`` state dict.

  Raises:
    ValueError: tensors left over, params missing, or shapes that differ (all listed).
  """
  size = latent_size or model.sample_size or 2 ** len(model.block_out_channels)
  size = size if isinstance(size, int) else size[0]
  args = (jnp.zeros((1, size, size, model.in_channels)), jnp.zeros((1,)),
          jnp.zeros((1, 1, model.cross_attention_dim)))
  return convert_module_params(state_dict, model, args, 'UNet2DCondition')


def load_diffusers_unet_condition(path: str | Path, **model_options):
  """``(UNet2DCondition, params)`` from a Stable Diffusion pipeline folder (its ``unet/``)
  or a ``UNet2DConditionModel`` folder; ``model_options`` (e.g. ``remat=True``) go to the
  model."""
  config, state_dict = read_diffusers_folder(path, 'unet', 'UNet2DConditionModel')
  model = UNet2DCondition(**unet_condition_config(config), **model_options)
  return model, convert_unet_condition_params(state_dict, model)


# CLIPTextConfig keys we read; the other keys of a transformers config (token ids for the
# tokenizer, dropout rates that are 0 in every released model, initialisation, dtype, ...)
# do not change the forward pass.
_TEXT_COPIED = ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
                'num_attention_heads', 'max_position_embeddings', 'hidden_act',
                'layer_norm_eps', 'eos_token_id')


def clip_text_config(config: dict) -> dict:
  """:class:`CLIPTextEncoder` keyword arguments for a transformers ``CLIPTextConfig``
  (a ``text_encoder/config.json``, or a ``CLIPConfig`` holding one in ``text_config``)."""
  config = config.get('text_config', config)
  model_type = config.get('model_type', 'clip_text_model')
  if model_type not in ('clip_text_model', 'clip'):
    raise ValueError(f'the text encoder config is a {model_type!r}, not a CLIP text model')
  for key in ('attention_dropout', 'dropout'):
    if config.get(key, 0.0):
      raise ValueError(f'CLIPTextConfig {key}={config[key]} is not supported (0 in every '
                       'released CLIP)')
  return {k: config[k] for k in _TEXT_COPIED if k in config}


def convert_clip_text_params(state_dict: dict, model: CLIPTextEncoder):
  """The params of ``model`` from a transformers ``CLIPTextModel`` state dict (keys with
  or without the ``text_model.`` prefix of older checkpoints).

  Raises:
    ValueError: tensors left over, params missing, or shapes that differ (all listed).
  """
  def name_of(key):
    key = key.removeprefix('text_model.')
    return None if key == 'embeddings.position_ids' else key.replace('.', '_')

  return convert_module_params(state_dict, model, (jnp.zeros((1, 2), jnp.int32),),
                               'CLIPTextEncoder', name_of)


def read_transformers_folder(path: str | Path, subfolder: str):
  """``(config, state_dict)`` of a transformers ``save_pretrained`` folder (``config.json``
  and ``model.safetensors``, or ``pytorch_model.bin`` with torch), or of a pipeline folder
  holding it in ``subfolder/``."""
  path = Path(path)
  if (path / subfolder / 'config.json').is_file():
    path = path / subfolder
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(f'no config.json in {path} or {path / subfolder}: give a Stable '
                            'Diffusion folder (diffusers layout) or the text encoder\'s own '
                            'folder')
  config = json.loads((path / 'config.json').read_text())
  if (path / 'model.safetensors').is_file():
    from safetensors.numpy import load_file
    return config, load_file(str(path / 'model.safetensors'))
  if (path / 'pytorch_model.bin').is_file():
    import torch
    return config, torch.load(path / 'pytorch_model.bin', map_location='cpu',
                              weights_only=True)
  raise FileNotFoundError(f'no model.safetensors or pytorch_model.bin in {path}')


def load_clip_text_encoder(path: str | Path):
  """``(CLIPTextEncoder, params)`` from a Stable Diffusion folder (its ``text_encoder/``)
  or a ``CLIPTextModel`` folder."""
  config, state_dict = read_transformers_folder(path, 'text_encoder')
  model = CLIPTextEncoder(**clip_text_config(config))
  return model, convert_clip_text_params(state_dict, model)


class PromptTokenizer:
  """CLIP's tokenizer as Stable Diffusion calls it: ``tokenizer(prompts) -> int32
  [len(prompts), max_length]``, start token, the prompt's tokens, end token, padded to
  ``max_length`` (77) with the folder's pad token (``<|endoftext|>`` for SD v1.x, ``!``
  for v2.x). Stable Diffusion's pipeline cuts a longer prompt silently; here a prompt
  that does not fit is an error (``truncate=True`` cuts it), since the concept to erase
  would otherwise lose its last words unnoticed."""

  def __init__(self, tokenizer, max_length: int = 77):
    self.tokenizer = tokenizer
    self.max_length = max_length

  def __call__(self, prompts, truncate: bool = False) -> np.ndarray:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
      raise ValueError('no prompts to tokenize')
    if not truncate:
      for prompt, ids in zip(prompts, self.tokenizer(prompts)['input_ids']):
        if len(ids) > self.max_length:
          raise ValueError(f'the prompt {prompt!r} is {len(ids)} tokens with its start and end '
                           f'tokens, more than the text encoder\'s {self.max_length}: shorten '
                           'it (or pass truncate=True to cut it as Stable Diffusion does)')
    out = self.tokenizer(prompts, padding='max_length', max_length=self.max_length,
                         truncation=True)['input_ids']
    return np.asarray(out, np.int32)


def load_clip_tokenizer(path: str | Path, max_length: int = 77) -> PromptTokenizer:
  """The tokenizer of a Stable Diffusion folder (its ``tokenizer/``: ``vocab.json``,
  ``merges.txt`` and, if present, ``tokenizer_config.json`` / ``special_tokens_map.json``),
  read offline by transformers' ``CLIPTokenizer`` (``pip install 'jaxunlearn[sd]'``)."""
  path = Path(path)
  folder = path / 'tokenizer' if (path / 'tokenizer').is_dir() else path
  missing = [f for f in ('vocab.json', 'merges.txt') if not (folder / f).is_file()]
  if missing:
    raise FileNotFoundError(f'{folder} lacks the tokenizer files {missing}: give a Stable '
                            'Diffusion folder (diffusers layout, with tokenizer/vocab.json and '
                            'tokenizer/merges.txt) or the tokenizer folder itself')
  try:
    from transformers import CLIPTokenizer
  except ImportError as e:
    raise ImportError("Stable Diffusion's tokenizer needs transformers: pip install "
                      "'jaxunlearn[sd]'") from e
  return PromptTokenizer(CLIPTokenizer.from_pretrained(str(folder), local_files_only=True),
                         max_length)


# What a Stable Diffusion folder (diffusers layout) holds; convert-sd needs all of them.
SD_PARTS = {'unet': 'config.json', 'text_encoder': 'config.json', 'vae': 'config.json',
            'tokenizer': 'vocab.json', 'scheduler': 'scheduler_config.json'}
_TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'tokenizer_config.json',
                    'special_tokens_map.json')


def check_sd_folder(path: str | Path) -> Path:
  """``path`` if it is a Stable Diffusion folder in diffusers' layout (``unet/``,
  ``text_encoder/``, ``vae/``, ``tokenizer/``, ``scheduler/``), else an error naming what is
  missing."""
  path = Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f'{path} is not a folder: give a Stable Diffusion folder '
                            '(StableDiffusionPipeline.save_pretrained or a hub download)')
  missing = [f'{part}/{file}' for part, file in SD_PARTS.items()
             if not (path / part / file).is_file()]
  if not (path / 'tokenizer' / 'merges.txt').is_file():
    missing.append('tokenizer/merges.txt')
  if missing:
    raise FileNotFoundError(f'{path} is not a Stable Diffusion folder in diffusers\' layout: '
                            f'it lacks {", ".join(missing)}')
  return path


def _module_config(module) -> dict:
  keep = [f for f in module.__dataclass_fields__ if f not in ('parent', 'name', 'remat')]
  return {f: (list(v) if isinstance(v := getattr(module, f), tuple) else v) for f in keep}


def _module(cls, config: dict, **options):
  return cls(**{f: tuple(v) if isinstance(v, list) else v for f, v in config.items()},
             **options)


def convert_sd_folder(path: str | Path, out_dir: str | Path) -> Path:
  """``jaxunlearn convert-sd``: a Stable Diffusion folder -> ``out_dir`` holding one orbax
  checkpoint of the UNet, text encoder and VAE params (``params/``), the three models'
  configurations (``config.json``), the tokenizer's files (``tokenizer/``) and the
  scheduler's configuration (``scheduler_config.json``); :func:`load_sd_checkpoint` reads
  it back. Every tensor of the folder lands on one parameter or the conversion fails."""
  import shutil

  from jaxunlearn.checkpoint import save_variables, write_json_atomic
  from jaxunlearn.convert.diffusers_dit import load_diffusers_vae
  path = check_sd_folder(path)
  unet, unet_params = load_diffusers_unet_condition(path)
  text, text_params = load_clip_text_encoder(path)
  vae, vae_params = load_diffusers_vae(path)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'tokenizer').mkdir(exist_ok=True)
  for name in _TOKENIZER_FILES:
    if (path / 'tokenizer' / name).is_file():
      shutil.copyfile(path / 'tokenizer' / name, out / 'tokenizer' / name)
  shutil.copyfile(path / 'scheduler' / 'scheduler_config.json', out / 'scheduler_config.json')
  save_variables(out / 'params', {'unet': unet_params, 'text_encoder': text_params,
                                  'vae': vae_params})
  write_json_atomic(out / 'config.json', {
      'unet': _module_config(unet), 'text_encoder': _module_config(text),
      'vae': _module_config(vae), 'source': str(path)})
  return out


def load_sd_checkpoint(path: str | Path, remat: bool = False) -> dict:
  """What :func:`convert_sd_folder` wrote: ``{'unet', 'unet_params', 'text_encoder',
  'text_params', 'vae', 'vae_params', 'scheduler_config', 'tokenizer_dir'}`` (the
  tokenizer: ``load_clip_tokenizer(result['tokenizer_dir'])``)."""
  from jaxunlearn.checkpoint import load_variables
  from jaxunlearn.models.vae import AutoencoderKL
  path = Path(path)
  if not (path / 'config.json').is_file() or not (path / 'params').is_dir():
    raise FileNotFoundError(f'{path} holds no converted Stable Diffusion: give a folder '
                            'written by jaxunlearn convert-sd')
  config = json.loads((path / 'config.json').read_text())
  tree = load_variables(path / 'params')
  return {'unet': _module(UNet2DCondition, config['unet'], remat=remat),
          'unet_params': tree['unet'],
          'text_encoder': _module(CLIPTextEncoder, config['text_encoder']),
          'text_params': tree['text_encoder'],
          'vae': _module(AutoencoderKL, config['vae']), 'vae_params': tree['vae'],
          'scheduler_config': json.loads((path / 'scheduler_config.json').read_text()),
          'tokenizer_dir': path / 'tokenizer'}
