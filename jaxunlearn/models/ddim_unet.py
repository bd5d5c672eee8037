"""The references' class-conditional DDPM UNet in Flax, NHWC.

SalUn (OPTML-Group/Unlearn-Saliency, ``DDPM/``) and SFR-on (K1nght/Unified-Unlearning-w-
Remain-Geometry, ``DDPM/``) train and unlearn a UNet from the DDIM code base
(``models/diffusion.py``, ``Conditional_Model``) whose conditioning differs from diffusers':

- the class goes through an embedding of width ``ch`` and its own two-layer MLP (``cemb``),
  beside the time embedding's MLP (``temb``); every resnet block projects the
  *concatenation* ``[temb, cemb]`` (``temb_cemb_proj``), where diffusers adds a class
  embedding to the time embedding;
- classifier-free guidance's "no class" is a learned vector ``null_classes_emb`` that
  replaces the class embedding before the MLP. Here it is class id ``num_classes`` (the
  last of ``num_class_embeds``), as for every class-conditional model of this library, so
  the samplers, label dropout and methods treat it like :class:`UNet2D`'s null class;
- GroupNorm(32, eps 1e-6), a stride-2 downsampling conv after zero padding of one row and
  column at the bottom/right, single-head attention with 1x1-conv q/k/v/proj_out, the
  time embedding of the DDPM code (``log(10000) / (half - 1)``, ``[sin, cos]``), dropout
  after the second norm (0.1, active when ``train=True``).

Submodule names are the PyTorch attribute paths with ``.`` -> ``_`` (``down.1.block.0`` ->
``down_1_block_0``), so that :mod:`jaxunlearn.convert.ddim_unet` maps the references'
checkpoints (``ckpts/ckpt.pth``) one tensor at a time; ``tests/test_ddim_unet.py`` checks
the outputs against a PyTorch module of the same structure.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxunlearn.models.unet import timestep_embedding


def _norm(name: str, groups: int):
  # PyTorch's two-pass variance; the references' eps 1e-6.
  return nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False, name=name)


def _conv(features: int, name: str, kernel: int = 3):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), name=name)


class RefResnetBlock(nn.Module):
  """``ResnetBlock``: norm, SiLU, conv, + ``temb_cemb_proj(SiLU([temb, cemb]))``, norm,
  SiLU, dropout, conv; a 1x1 ``nin_shortcut`` when the channels change; ``x + h``."""

  out_channels: int
  dropout: float
  groups: int = 32

  @nn.compact
  def __call__(self, x, emb, train: bool = False):
    h = _conv(self.out_channels, 'conv1')(nn.silu(_norm('norm1', self.groups)(x)))
    h = h + nn.Dense(self.out_channels, name='temb_cemb_proj')(nn.silu(emb))[:, None, None]
    h = nn.silu(_norm('norm2', self.groups)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.out_channels, 'conv2')(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 'nin_shortcut', kernel=1)(x)
    return x + h


class RefAttnBlock(nn.Module):
  """``AttnBlock``: norm, one-head self-attention over the H*W positions with 1x1-conv
  q, k, v (softmax of ``q k^T / sqrt(C)`` in float32), ``proj_out``, residual."""

  groups: int = 32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = _norm('norm', self.groups)(x)
    q, k, v = (_conv(c, n, kernel=1)(h).reshape(b, hgt * wid, c) for n in ('q', 'k', 'v'))
    logits = jnp.einsum('bqc,bkc->bqk', q, k) * (c ** -0.5)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum('bqk,bkc->bqc', weights, v).reshape(b, hgt, wid, c)
    return x + _conv(c, 'proj_out', kernel=1)(out)


class RefDDPMUNet(nn.Module):
  """``Conditional_Model`` of the references' DDPM code: ``model.apply(variables, x [B, H,
  W, C], timesteps [B] or scalar, class_labels [B], train=False) -> eps [B, H, W, out]``.

  Attributes are the references' config keys (``model:`` and ``data:`` of their
  ``configs/cifar10_*.yml``): ``ch``, ``ch_mult``, ``num_res_blocks``,
  ``attn_resolutions`` (side lengths at which blocks get attention), ``dropout``,
  ``resolution`` (the image side), ``num_classes`` (``n_classes``), ``in_channels``,
  ``out_ch``, ``resamp_with_conv``; ``groups`` is their fixed 32 (smaller models of this
  library use fewer). Their ``cond_drop_prob`` is label dropout, which our losses do
  (``Denoising.cond_drop_prob``: label -> the null class id).
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resolution: int = 32
  num_classes: int = 10
  in_channels: int = 3
  out_ch: int = 3
  resamp_with_conv: bool = True
  groups: int = 32

  @property
  def num_class_embeds(self) -> int:
    """Class ids the model takes: the classes and the null class (the last id)."""
    return self.num_classes + 1

  @property
  def sample_size(self) -> int:
    return self.resolution

  def _block(self, out, name):
    return RefResnetBlock(out, self.dropout, self.groups, name=name)

  @nn.compact
  def __call__(self, x, timesteps, class_labels=None, train: bool = False):
    if x.shape[1] != self.resolution or x.shape[2] != self.resolution:
      raise ValueError(f'this UNet takes {self.resolution}x{self.resolution} images (its '
                       f'attention sits at sides {tuple(self.attn_resolutions)}), got '
                       f'{x.shape[1]}x{x.shape[2]}')
    if class_labels is None:
      raise ValueError(f'this UNet is class-conditional: pass class_labels (the null class '
                       f'{self.num_classes} for unconditional samples)')
    ch, n_levels = self.ch, len(self.ch_mult)
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
    # The DDPM code's embedding: frequencies exp(-ln(1e4) i / (half - 1)), [sin, cos].
    temb = timestep_embedding(timesteps, ch, flip_sin_to_cos=False, freq_shift=1)
    temb = nn.Dense(4 * ch, name='temb_dense_0')(temb)
    temb = nn.Dense(4 * ch, name='temb_dense_1')(nn.silu(temb))
    table = nn.Embed(self.num_classes, ch, name='classes_emb')
    null = self.param('null_classes_emb', nn.initializers.normal(1.0), (ch,))
    labels = jnp.asarray(class_labels)
    is_null = (labels == self.num_classes)[:, None]
    cemb = jnp.where(is_null, null[None].astype(temb.dtype),
                     table(jnp.clip(labels, 0, self.num_classes - 1)))
    cemb = nn.Dense(4 * ch, name='cemb_dense_0')(cemb)
    cemb = nn.Dense(4 * ch, name='cemb_dense_1')(nn.silu(cemb))
    emb = jnp.concatenate([temb, cemb], axis=-1)

    side = self.resolution
    hs = [_conv(ch, 'conv_in')(x)]
    for i in range(n_levels):
      for j in range(self.num_res_blocks):
        h = self._block(ch * self.ch_mult[i], f'down_{i}_block_{j}')(hs[-1], emb, train)
        if side in self.attn_resolutions:
          h = RefAttnBlock(self.groups, name=f'down_{i}_attn_{j}')(h)
        hs.append(h)
      if i != n_levels - 1:
        h = hs[-1]
        if self.resamp_with_conv:  # pad one row/column at the bottom/right, 3x3 stride 2
          h = nn.Conv(h.shape[-1], (3, 3), (2, 2), padding=((0, 1), (0, 1)),
                      name=f'down_{i}_downsample_conv')(h)
        else:
          h = nn.avg_pool(h, (2, 2), (2, 2))
        hs.append(h)
        side //= 2

    h = hs[-1]
    h = self._block(h.shape[-1], 'mid_block_1')(h, emb, train)
    h = RefAttnBlock(self.groups, name='mid_attn_1')(h)
    h = self._block(h.shape[-1], 'mid_block_2')(h, emb, train)

    for i in reversed(range(n_levels)):
      for j in range(self.num_res_blocks + 1):
        h = self._block(ch * self.ch_mult[i], f'up_{i}_block_{j}')(
            jnp.concatenate([h, hs.pop()], axis=-1), emb, train)
        if side in self.attn_resolutions:
          h = RefAttnBlock(self.groups, name=f'up_{i}_attn_{j}')(h)
      if i != 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, x2
        if self.resamp_with_conv:
          h = _conv(h.shape[-1], f'up_{i}_upsample_conv')(h)
        side *= 2

    h = nn.silu(_norm('norm_out', self.groups)(h))
    return _conv(self.out_ch, 'conv_out')(h)


def reference_cifar10_unet(num_classes: int = 10, in_channels: int = 3) -> RefDDPMUNet:
  """The references' CIFAR-10 DDPM (``configs/cifar10_pretrain.yml`` of both: ch 128,
  ch_mult 1-2-2-2, 2 resnet blocks, attention at 16x16, dropout 0.1)."""
  return RefDDPMUNet(num_classes=num_classes, in_channels=in_channels, out_ch=in_channels)


def digits_reference_unet(num_classes: int = 10, in_channels: int = 1, ch: int = 32,
                          resolution: int = 8) -> RefDDPMUNet:
  """The references' structure at the digits' scale: ch 32, ch_mult 1-2, one resnet
  block per level, attention at 4x4 (below the top level, as theirs), dropout 0.1, 8
  groups; ``resolution`` the image side."""
  return RefDDPMUNet(ch=ch, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(resolution // 2,),
                     dropout=0.1, resolution=resolution, num_classes=num_classes,
                     in_channels=in_channels, out_ch=in_channels, groups=8)

