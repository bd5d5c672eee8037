"""A Flax UNet structurally equal to diffusers' ``UNet2DConditionModel``, NHWC: the
denoiser of Stable Diffusion v1.x / v2.x, conditioned on text through cross-attention.

Same blocks, same order, same arithmetic as ``diffusers.UNet2DConditionModel`` (0.30-0.42)
with the options Stable Diffusion uses: positional time embedding, ``CrossAttnDownBlock2D``
/ ``DownBlock2D`` / ``UNetMidBlock2DCrossAttn`` / ``UpBlock2D`` / ``CrossAttnUpBlock2D``,
``Transformer2DModel`` blocks (GroupNorm, a 1x1 conv or, with ``use_linear_projection``
(SD 2.x), a linear projection in and out, ``BasicTransformerBlock`` s: self-attention,
cross-attention on the text encoder's states, a GEGLU feed-forward, each after a LayerNorm
and added back). Submodule names follow diffusers' attribute names
(``down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k`` for
``down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k``), so that
:mod:`jaxunlearn.convert.stable_diffusion` maps a PyTorch state dict onto these params one
key at a time; ``tests/test_stable_diffusion.py`` checks the outputs against a randomly
initialised diffusers model.

diffusers' configs name the number of attention *heads* ``attention_head_dim`` (its own
comment calls this a naming mistake kept for compatibility): SD v1.x's ``8`` means 8 heads
of 40, 80 and 160 channels. The attribute keeps diffusers' name and meaning here, so a
``unet/config.json`` reads unchanged.

``remat=True`` recomputes each resnet and transformer block in the backward pass instead of
keeping its activations (``jax.checkpoint``; diffusers' ``enable_gradient_checkpointing``):
the same gradients, far less memory at 512x512 (``experiments/bench_sd_memory.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn.models.unet import (ResnetBlock2D, _conv, _group_norm, check_blocks,
                                    timestep_embedding)

DOWN_BLOCKS = ('DownBlock2D', 'CrossAttnDownBlock2D')
UP_BLOCKS = ('UpBlock2D', 'CrossAttnUpBlock2D')


class Attention(nn.Module):
  """diffusers' ``Attention`` on tokens (``AttnProcessor2_0``) as ``BasicTransformerBlock``
  builds it: q from ``x``, k and v from ``context`` (``x`` itself for self-attention), no
  bias on q, k, v (``attention_bias=False``), ``heads`` heads of ``head_dim``, softmax in
  float32 (diffusers' ``upcast_attention``/``upcast_softmax`` change nothing in float32),
  an output projection with bias."""

  heads: int
  head_dim: int
  out_dim: int

  @nn.compact
  def __call__(self, x, context=None):
    context = x if context is None else context
    b, n, _ = x.shape
    inner = self.heads * self.head_dim

    def project(name, source):
      return nn.Dense(inner, use_bias=False, name=name)(source).reshape(
          b, source.shape[1], self.heads, self.head_dim)

    q, k, v = project('to_q', x), project('to_k', context), project('to_v', context)
    out = jax.nn.dot_product_attention(q, k, v).reshape(b, n, inner)
    return nn.Dense(self.out_dim, name='to_out_0')(out)


class BasicTransformerBlock(nn.Module):
  """diffusers' ``BasicTransformerBlock`` (``norm_type='layer_norm'``):
  ``x += attn1(LN1(x))`` (self-attention),
  ``x += attn2(LN2(x), context)``, ``x += ff(LN3(x))`` with the GEGLU feed-forward
  ``W2 (a * gelu(g))``, ``[a, g] = W1 x``, 4x wide, exact (erf) GELU."""

  heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x, context):
    dim = x.shape[-1]
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)
    x = x + Attention(self.heads, self.head_dim, dim, name='attn1')(ln('norm1')(x))
    x = x + Attention(self.heads, self.head_dim, dim, name='attn2')(ln('norm2')(x), context)
    h = nn.Dense(8 * dim, name='ff_net_0_proj')(ln('norm3')(x))
    a, gate = jnp.split(h, 2, axis=-1)
    return x + nn.Dense(dim, name='ff_net_2')(a * nn.gelu(gate, approximate=False))


class Transformer2D(nn.Module):
  """diffusers' ``Transformer2DModel`` on a feature map (continuous input): GroupNorm
  (eps 1e-6), ``proj_in`` (1x1 conv, or linear after flattening with
  ``use_linear_projection``), ``layers`` transformer blocks over the H*W tokens, ``proj_out``,
  plus the input."""

  heads: int
  head_dim: int
  groups: int
  layers: int = 1
  use_linear_projection: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x, context):
    b, hgt, wid, c = x.shape
    inner = self.heads * self.head_dim
    h = nn.GroupNorm(num_groups=self.groups, epsilon=1e-6, use_fast_variance=False,
                     name='norm')(x)
    if self.use_linear_projection:
      h = nn.Dense(inner, name='proj_in')(h.reshape(b, hgt * wid, c))
    else:
      h = _conv(inner, 'proj_in', kernel=1)(h).reshape(b, hgt * wid, inner)
    block = nn.remat(BasicTransformerBlock) if self.remat else BasicTransformerBlock
    for k in range(self.layers):
      h = block(self.heads, self.head_dim, name=f'transformer_blocks_{k}')(h, context)
    if self.use_linear_projection:
      h = nn.Dense(c, name='proj_out')(h).reshape(b, hgt, wid, c)
    else:
      h = _conv(c, 'proj_out', kernel=1)(h.reshape(b, hgt, wid, inner))
    return h + x


def _per_block(value, n: int, name: str) -> tuple:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f'{name} has {len(value)} entries for {n} blocks')
    return tuple(value)
  return (value,) * n


class UNet2DCondition(nn.Module):
  """``diffusers.UNet2DConditionModel`` in Flax: ``model.apply(variables, x [B, H, W, C],
  timesteps [B] or scalar, encoder_hidden_states [B, L, cross_attention_dim], train=False)
  -> eps [B, H, W, out_channels]``.

  The attributes are ``UNet2DConditionModel``'s config keys (those Stable Diffusion v1.x
  and v2.x use; defaults: SD v1.x's UNet, 860M parameters, on 64x64x4 latents with CLIP
  ViT-L/14's 768-wide states). ``attention_head_dim`` is the number of heads per block, as
  in diffusers (see the module docstring). H and W must be divisible by
  ``2 ** (len(block_out_channels) - 1)``.
  """

  in_channels: int = 4
  out_channels: int = 4
  block_out_channels: Sequence[int] = (320, 640, 1280, 1280)
  down_block_types: Sequence[str] = ('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                                     'CrossAttnDownBlock2D', 'DownBlock2D')
  up_block_types: Sequence[str] = ('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                                   'CrossAttnUpBlock2D')
  layers_per_block: int = 2
  attention_head_dim: Any = 8
  cross_attention_dim: int = 768
  transformer_layers_per_block: int = 1
  use_linear_projection: bool = False
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  mid_block_scale_factor: float = 1.0
  center_input_sample: bool = False
  dropout: float = 0.0
  upcast_attention: bool = False  # float32 softmax always (see Attention)
  sample_size: Any = None
  remat: bool = False

  def __post_init__(self):
    check_blocks(self, DOWN_BLOCKS, UP_BLOCKS)
    heads = _per_block(self.attention_head_dim, len(self.block_out_channels),
                       'attention_head_dim')
    for channels, h in zip(self.block_out_channels, heads):
      if channels % h:
        raise ValueError(f'{channels} channels do not split into {h} attention heads')
    super().__post_init__()

  def _resnet(self, channels, name, scale=1.0):
    block = nn.remat(ResnetBlock2D, static_argnums=(3,)) if self.remat else ResnetBlock2D
    return block(channels, self.norm_num_groups, self.norm_eps, 'default', self.dropout,
                 scale, name=name)

  def _transformer(self, channels, heads, name):
    return Transformer2D(heads, channels // heads, self.norm_num_groups,
                         self.transformer_layers_per_block, self.use_linear_projection,
                         self.remat, name=name)

  @nn.compact
  def __call__(self, x, timesteps, encoder_hidden_states, train: bool = False):
    ch = self.block_out_channels
    n = len(ch)
    heads = _per_block(self.attention_head_dim, n, 'attention_head_dim')
    if x.shape[1] % 2 ** (n - 1) or x.shape[2] % 2 ** (n - 1):
      raise ValueError(f'the latents are {x.shape[1]}x{x.shape[2]}: both sides must be '
                       f'divisible by {2 ** (n - 1)} for {n} UNet levels')
    states = encoder_hidden_states
    if states.ndim != 3 or states.shape[-1] != self.cross_attention_dim:
      raise ValueError(f'encoder_hidden_states must be [batch, tokens, '
                       f'{self.cross_attention_dim}] (the text encoder\'s last hidden state), '
                       f'got {encoder_hidden_states.shape}')
    context = encoder_hidden_states
    if self.center_input_sample:
      x = 2 * x - 1.0
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
    t = timestep_embedding(timesteps, ch[0], self.flip_sin_to_cos, self.freq_shift)
    emb = nn.Dense(4 * ch[0], name='time_embedding_linear_1')(t)
    emb = nn.Dense(4 * ch[0], name='time_embedding_linear_2')(nn.silu(emb))

    h = _conv(ch[0], 'conv_in')(x)
    skips = [h]
    for i, kind in enumerate(self.down_block_types):
      for j in range(self.layers_per_block):
        h = self._resnet(ch[i], f'down_blocks_{i}_resnets_{j}')(h, emb, train)
        if kind == 'CrossAttnDownBlock2D':
          h = self._transformer(ch[i], heads[i], f'down_blocks_{i}_attentions_{j}')(h, context)
        skips.append(h)
      if i < n - 1:
        h = _conv(ch[i], f'down_blocks_{i}_downsamplers_0_conv', stride=2)(h)
        skips.append(h)

    scale = self.mid_block_scale_factor
    h = self._resnet(ch[-1], 'mid_block_resnets_0', scale)(h, emb, train)
    h = self._transformer(ch[-1], heads[-1], 'mid_block_attentions_0')(h, context)
    h = self._resnet(ch[-1], 'mid_block_resnets_1', scale)(h, emb, train)

    for i, kind in enumerate(self.up_block_types):
      out = ch[n - 1 - i]
      for j in range(self.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self._resnet(out, f'up_blocks_{i}_resnets_{j}')(h, emb, train)
        if kind == 'CrossAttnUpBlock2D':
          h = self._transformer(out, heads[n - 1 - i], f'up_blocks_{i}_attentions_{j}')(
              h, context)
      if i < n - 1:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, x2
        h = _conv(out, f'up_blocks_{i}_upsamplers_0_conv')(h)

    h = nn.silu(_group_norm(self.norm_num_groups, self.norm_eps, 'conv_norm_out')(h))
    return _conv(self.out_channels, 'conv_out')(h)


def sd_v1_unet(**overrides) -> UNet2DCondition:
  """Stable Diffusion v1.x's UNet (v1.4 and v1.5 share it: ``unet/config.json`` of both)."""
  return UNet2DCondition(sample_size=64, **overrides)


def sd_v2_unet(**overrides) -> UNet2DCondition:
  """Stable Diffusion v2.x's UNet: heads of 64 channels (5, 10, 20, 20 per level), linear
  projections, OpenCLIP ViT-H's 1024-wide states."""
  return UNet2DCondition(**{'attention_head_dim': (5, 10, 20, 20), 'cross_attention_dim': 1024,
                            'use_linear_projection': True, 'sample_size': 96, **overrides})
