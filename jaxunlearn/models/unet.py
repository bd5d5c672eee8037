"""A Flax UNet structurally equal to diffusers' ``UNet2DModel``, NHWC.

Same blocks, same order, same arithmetic as ``diffusers.UNet2DModel`` (0.30-0.42) with the
options DDPM-style models use: positional time embedding, optional class embedding
(``num_class_embeds``; class-conditional models reserve the last id as the null class of
classifier-free guidance), ``DownBlock2D`` / ``AttnDownBlock2D`` / ``UpBlock2D`` /
``AttnUpBlock2D``, a mid block with attention, ``default`` or ``scale_shift`` time
conditioning. Submodule names follow diffusers' attribute names (``down_blocks_0`` for
``down_blocks.0``), so that :mod:`jaxunlearn.convert.diffusers` maps a PyTorch state dict
onto these params one key at a time; ``tests/test_unet.py`` checks the outputs against a
randomly initialised diffusers model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

DOWN_BLOCKS = ('DownBlock2D', 'AttnDownBlock2D')
UP_BLOCKS = ('UpBlock2D', 'AttnUpBlock2D')


def timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0):
  """Sinusoidal embedding ``[B, dim]`` of (float) timesteps ``[B]``, as diffusers'
  ``get_timestep_embedding``: frequencies ``exp(-ln(max_period) i / (dim/2 - freq_shift))``,
  ``[sin, cos]`` (``[cos, sin]`` with ``flip_sin_to_cos``), zero-padded if ``dim`` is odd."""
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  angles = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _group_norm(groups: int, eps: float, name: str):
  # Two-pass variance, as PyTorch computes it (flax's default E[x^2] - E[x]^2 drifts).
  return nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False, name=name)


def _conv(features: int, name: str, kernel: int = 3, stride: int = 1):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 name=name)


class ResnetBlock2D(nn.Module):
  """diffusers' ``ResnetBlock2D``: GroupNorm, SiLU, conv, + time projection ('default') or
  scale-and-shift after the second norm ('scale_shift'; neither when ``temb`` is None),
  SiLU, dropout, conv, 1x1 shortcut when the channels change, ``(x + h) / output_scale_factor``."""

  out_channels: int
  groups: int
  eps: float
  time_embedding_norm: str = 'default'
  dropout: float = 0.0
  output_scale_factor: float = 1.0

  @nn.compact
  def __call__(self, x, temb, train: bool = False):
    h = nn.silu(_group_norm(self.groups, self.eps, 'norm1')(x))
    h = _conv(self.out_channels, 'conv1')(h)
    norm2 = _group_norm(self.groups, self.eps, 'norm2')
    if temb is None:  # no time conditioning (the blocks of an autoencoder)
      h = norm2(h)
    elif self.time_embedding_norm == 'scale_shift':
      t = nn.Dense(2 * self.out_channels, name='time_emb_proj')(nn.silu(temb))[:, None, None]
      scale, shift = jnp.split(t, 2, axis=-1)
      h = norm2(h) * (1 + scale) + shift
    else:
      h = norm2(h + nn.Dense(self.out_channels, name='time_emb_proj')(nn.silu(temb))[:, None, None])
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = _conv(self.out_channels, 'conv2')(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 'conv_shortcut', kernel=1)(x)
    return (x + h) / self.output_scale_factor


class SpatialAttention(nn.Module):
  """diffusers' ``Attention`` on a feature map (``AttnProcessor2_0``): optional GroupNorm,
  multi-head self-attention over the H*W positions (softmax in float32), output
  projection, residual, ``/ rescale_output_factor``."""

  head_dim: int
  groups: int | None
  eps: float
  rescale_output_factor: float = 1.0

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = x if self.groups is None else _group_norm(self.groups, self.eps, 'group_norm')(x)
    h = h.reshape(b, hgt * wid, c)
    heads = c // self.head_dim

    def split(t):  # [B, L, C] -> [B, heads, L, head_dim]
      return t.reshape(b, -1, heads, self.head_dim).transpose(0, 2, 1, 3)

    q, k, v = (split(nn.Dense(c, name=n)(h)) for n in ('to_q', 'to_k', 'to_v'))
    logits = jnp.einsum('bhqd,bhkd->bhqk', q, k) / math.sqrt(self.head_dim)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhqk,bhkd->bhqd', weights, v).transpose(0, 2, 1, 3).reshape(b, -1, c)
    out = nn.Dense(c, name='to_out_0')(out).reshape(b, hgt, wid, c)
    return (out + x) / self.rescale_output_factor


def check_blocks(unet, down_allowed, up_allowed) -> None:
  """A UNet's levels agree in number and its block types are ones it implements."""
  n = len(unet.block_out_channels)
  if len(unet.down_block_types) != n or len(unet.up_block_types) != n:
    raise ValueError(f'block_out_channels, down_block_types and up_block_types must have '
                     f'the same length, got {n}, {len(unet.down_block_types)} and '
                     f'{len(unet.up_block_types)}')
  for kind, allowed in ((unet.down_block_types, down_allowed), (unet.up_block_types, up_allowed)):
    bad = sorted({t for t in kind if t not in allowed})
    if bad:
      raise ValueError(f'unsupported block types {bad}; supported: {", ".join(allowed)}')


class UNet2D(nn.Module):
  """``diffusers.UNet2DModel`` in Flax: ``model.apply(variables, x [B, H, W, C],
  timesteps [B] or scalar, class_labels [B] or None, train=False) -> [B, H, W, out]``.

  The attributes are ``UNet2DModel``'s config keys (those of DDPM-style models; see
  :func:`jaxunlearn.convert.diffusers.unet_config`). ``num_class_embeds`` adds a class
  embedding summed with the time embedding; a class-conditional model for classifier-free
  guidance has ``num_classes + 1`` ids, the last being the null class.
  """

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (224, 448, 672, 896)
  down_block_types: Sequence[str] = ('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D',
                                     'AttnDownBlock2D')
  up_block_types: Sequence[str] = ('AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D',
                                   'UpBlock2D')
  layers_per_block: int = 2
  attention_head_dim: int | None = 8
  norm_num_groups: int = 32
  attn_norm_num_groups: int | None = None
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  time_embedding_dim: int | None = None
  mid_block_scale_factor: float = 1.0
  resnet_time_scale_shift: str = 'default'
  add_attention: bool = True
  center_input_sample: bool = False
  dropout: float = 0.0
  num_class_embeds: int | None = None
  sample_size: Any = None

  def __post_init__(self):
    check_blocks(self, DOWN_BLOCKS, UP_BLOCKS)
    if self.resnet_time_scale_shift not in ('default', 'scale_shift'):
      raise ValueError("resnet_time_scale_shift must be 'default' or 'scale_shift', got "
                       f'{self.resnet_time_scale_shift!r}')
    super().__post_init__()

  def _head_dim(self, channels):
    return self.attention_head_dim if self.attention_head_dim is not None else channels

  def _resnet(self, channels, name, scale=1.0):
    return ResnetBlock2D(channels, self.norm_num_groups, self.norm_eps,
                         self.resnet_time_scale_shift, self.dropout, scale, name=name)

  def _attention(self, channels, name, groups, scale=1.0):
    return SpatialAttention(self._head_dim(channels), groups, self.norm_eps, scale, name=name)

  @nn.compact
  def __call__(self, x, timesteps, class_labels=None, train: bool = False):
    ch = self.block_out_channels
    if self.center_input_sample:
      x = 2 * x - 1.0
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
    temb_dim = self.time_embedding_dim or ch[0] * 4
    t = timestep_embedding(timesteps, ch[0], self.flip_sin_to_cos, self.freq_shift)
    emb = nn.Dense(temb_dim, name='time_embedding_linear_1')(t)
    emb = nn.Dense(temb_dim, name='time_embedding_linear_2')(nn.silu(emb))
    if self.num_class_embeds is not None:
      if class_labels is None:
        raise ValueError('this UNet is class-conditional: pass class_labels (the null class '
                         f'{self.num_class_embeds - 1} for unconditional samples)')
      emb = emb + nn.Embed(self.num_class_embeds, temb_dim, name='class_embedding')(
          class_labels)
    elif class_labels is not None:
      raise ValueError('class_labels given to a UNet without a class embedding '
                       '(num_class_embeds=None)')

    h = _conv(ch[0], 'conv_in')(x)
    skips = [h]
    for i, kind in enumerate(self.down_block_types):
      for j in range(self.layers_per_block):
        h = self._resnet(ch[i], f'down_blocks_{i}_resnets_{j}')(h, emb, train)
        if kind == 'AttnDownBlock2D':
          h = self._attention(ch[i], f'down_blocks_{i}_attentions_{j}', self.norm_num_groups)(h)
        skips.append(h)
      if i < len(ch) - 1:
        h = _conv(ch[i], f'down_blocks_{i}_downsamplers_0_conv', stride=2)(h)
        skips.append(h)

    scale = self.mid_block_scale_factor
    h = self._resnet(ch[-1], 'mid_block_resnets_0', scale)(h, emb, train)
    if self.add_attention:
      groups = self.attn_norm_num_groups
      if groups is None and self.resnet_time_scale_shift == 'default':
        groups = self.norm_num_groups  # diffusers: no norm in the mid attention otherwise
      h = self._attention(ch[-1], 'mid_block_attentions_0', groups, scale)(h)
    h = self._resnet(ch[-1], 'mid_block_resnets_1', scale)(h, emb, train)

    for i, kind in enumerate(self.up_block_types):
      out = ch[len(ch) - 1 - i]
      for j in range(self.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self._resnet(out, f'up_blocks_{i}_resnets_{j}')(h, emb, train)
        if kind == 'AttnUpBlock2D':
          h = self._attention(out, f'up_blocks_{i}_attentions_{j}', self.norm_num_groups)(h)
      if i < len(ch) - 1:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, x2
        h = _conv(out, f'up_blocks_{i}_upsamplers_0_conv')(h)

    h = nn.silu(_group_norm(self.norm_num_groups, self.norm_eps, 'conv_norm_out')(h))
    return _conv(self.out_channels, 'conv_out')(h)


def digits_unet(channels=(32, 64), num_classes: int = 10, in_channels: int = 1) -> UNet2D:
  """The small class-conditional UNet2D of the digits DDPM: a ``DownBlock2D`` then
  ``AttnDownBlock2D`` s (attention below the top level), one resnet per level, 8 groups,
  ``num_classes + 1`` class embeddings (the last is the null class of classifier-free
  guidance). ``(32, 64)`` on 8x8 images has 703k parameters."""
  n = len(channels)
  down = ('DownBlock2D',) + ('AttnDownBlock2D',) * (n - 1)
  return UNet2D(in_channels=in_channels, out_channels=in_channels,
                block_out_channels=tuple(channels), down_block_types=down,
                up_block_types=tuple(d.replace('Down', 'Up') for d in reversed(down)),
                layers_per_block=1, norm_num_groups=8, num_class_embeds=num_classes + 1)


def ddpm_cifar10_unet(num_classes: int = 10, in_channels: int = 3) -> UNet2D:
  """The UNet of DDPM's CIFAR-10 model (Ho et al. 2020; ``google/ddpm-cifar10-32``'s
  config: 35.7M parameters) with a class embedding of ``num_classes + 1`` ids (the last
  the null class of classifier-free guidance), as the SalUn and SFR-on DDPM experiments
  condition it: channels 128-256-256-256, two resnets per level, attention at 16x16,
  dropout 0.1, 32 groups."""
  return UNet2D(in_channels=in_channels, out_channels=in_channels,
                block_out_channels=(128, 256, 256, 256),
                down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
                layers_per_block=2, attention_head_dim=None, norm_num_groups=32,
                dropout=0.1, num_class_embeds=num_classes + 1, sample_size=32)
