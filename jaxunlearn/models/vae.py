"""A Flax AutoencoderKL structurally equal to diffusers' ``AutoencoderKL``, NHWC.

The latent space of DiT (and of Stable Diffusion): an encoder of ``DownEncoderBlock2D``
levels and a mid block with attention to a diagonal Gaussian over ``latent_channels``
channels (``quant_conv``), and a decoder that mirrors it (``post_quant_conv``,
``UpDecoderBlock2D`` levels). Diffusion models see ``scaling_factor * z``. Blocks are those
of :mod:`jaxunlearn.models.unet` without time conditioning, with diffusers' attribute names
(``encoder_down_blocks_0_resnets_1_conv2`` for ``encoder.down_blocks.0.resnets.1.conv2``),
so :mod:`jaxunlearn.convert.diffusers_dit` loads ``stabilityai/sd-vae-ft-ema`` (DiT's VAE)
one key at a time.

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2)
    z = vae.apply(variables, images, method=AutoencoderKL.encode_latents)   # scaled
    images = vae.apply(variables, z, method=AutoencoderKL.decode_latents)
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn.models.unet import ResnetBlock2D, SpatialAttention, _conv, _group_norm


class _MidBlock(nn.Module):
  """``UNetMidBlock2D`` without time: resnet, single-head attention, resnet."""

  channels: int
  groups: int
  add_attention: bool = True

  @nn.compact
  def __call__(self, h):
    h = ResnetBlock2D(self.channels, self.groups, 1e-6, name='resnets_0')(h, None)
    if self.add_attention:
      h = SpatialAttention(self.channels, self.groups, 1e-6, name='attentions_0')(h)
    return ResnetBlock2D(self.channels, self.groups, 1e-6, name='resnets_1')(h, None)


class Encoder(nn.Module):
  """diffusers' ``vae.Encoder`` (``double_z``): images -> ``2 * latent_channels`` moments."""

  latent_channels: int
  block_out_channels: Sequence[int]
  layers_per_block: int
  groups: int
  mid_block_add_attention: bool = True

  @nn.compact
  def __call__(self, x):
    ch = self.block_out_channels
    h = _conv(ch[0], 'conv_in')(x)
    for i, c in enumerate(ch):
      for j in range(self.layers_per_block):
        h = ResnetBlock2D(c, self.groups, 1e-6, name=f'down_blocks_{i}_resnets_{j}')(h, None)
      if i < len(ch) - 1:  # Downsample2D(padding=0): pad right and bottom by one, stride 2
        h = jnp.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0)))
        h = nn.Conv(c, (3, 3), (2, 2), padding='VALID', name=f'down_blocks_{i}_downsamplers_0_conv')(h)
    h = _MidBlock(ch[-1], self.groups, self.mid_block_add_attention, name='mid_block')(h)
    h = nn.silu(_group_norm(self.groups, 1e-6, 'conv_norm_out')(h))
    return _conv(2 * self.latent_channels, 'conv_out')(h)


class Decoder(nn.Module):
  """diffusers' ``vae.Decoder`` (group norm): latents -> images."""

  out_channels: int
  block_out_channels: Sequence[int]
  layers_per_block: int
  groups: int
  mid_block_add_attention: bool = True

  @nn.compact
  def __call__(self, z):
    ch = tuple(reversed(self.block_out_channels))
    h = _conv(ch[0], 'conv_in')(z)
    h = _MidBlock(ch[0], self.groups, self.mid_block_add_attention, name='mid_block')(h)
    for i, c in enumerate(ch):
      for j in range(self.layers_per_block + 1):
        h = ResnetBlock2D(c, self.groups, 1e-6, name=f'up_blocks_{i}_resnets_{j}')(h, None)
      if i < len(ch) - 1:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, x2
        h = _conv(c, f'up_blocks_{i}_upsamplers_0_conv')(h)
    h = nn.silu(_group_norm(self.groups, 1e-6, 'conv_norm_out')(h))
    return _conv(self.out_channels, 'conv_out')(h)


class AutoencoderKL(nn.Module):
  """``diffusers.AutoencoderKL`` in Flax (group-norm decoder; the attributes are its config
  keys, defaults diffusers'). ``apply(variables, x)`` reconstructs ``x`` through the
  posterior mean (``sample_posterior=True`` with an rng 'latent' draws from it); the methods
  :meth:`encode` (moments), :meth:`encode_latents` / :meth:`decode_latents` (scaled latents,
  what a latent diffusion model sees) and :meth:`decode` are ``method=`` targets."""

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  def setup(self):
    self.encoder = Encoder(self.latent_channels, self.block_out_channels, self.layers_per_block,
                           self.norm_num_groups, self.mid_block_add_attention)
    self.decoder = Decoder(self.out_channels, self.block_out_channels, self.layers_per_block,
                           self.norm_num_groups, self.mid_block_add_attention)
    if self.use_quant_conv:
      self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1))
    if self.use_post_quant_conv:
      self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1))

  def encode(self, x):
    """``(mean, logvar)`` of the posterior over raw latents; logvar clipped to [-30, 20]
    as diffusers' ``DiagonalGaussianDistribution``."""
    moments = self.encoder(x)
    if self.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    """Images from raw (unscaled) latents."""
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def encode_latents(self, x, sample: bool = False):
    """``scaling_factor * (z - shift_factor)``, z the posterior mean (or a draw with the rng
    'latent' when ``sample``): what a latent diffusion model is trained on."""
    z = self._posterior(x, sample)
    return (z - (self.shift_factor or 0.0)) * self.scaling_factor

  def decode_latents(self, z):
    """Images from scaled latents (the inverse of :meth:`encode_latents`' scaling)."""
    return self.decode(z / self.scaling_factor + (self.shift_factor or 0.0))

  def _posterior(self, x, sample: bool):
    mean, logvar = self.encode(x)
    if not sample:
      return mean
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng('latent'), mean.shape)

  def __call__(self, x, sample_posterior: bool = False):
    return self.decode(self._posterior(x, sample_posterior))
