"""A Flax DiT structurally equal to diffusers' ``DiTTransformer2DModel``, NHWC.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023), as diffusers (0.30-0.42)
computes it: a ``p x p`` patch embedding plus fixed 2D sin-cos positions, ``num_layers``
adaLN-Zero transformer blocks conditioned on (timestep, class), a final adaptive LayerNorm
and a linear map back to patches. Submodule names follow diffusers' attribute names
(``transformer_blocks_3_attn1_to_q`` for ``transformer_blocks.3.attn1.to_q``), so that
:mod:`jaxunlearn.convert.diffusers_dit` maps a PyTorch state dict onto these params one key
at a time; ``tests/test_dit.py`` checks the outputs against a randomly initialised
diffusers model.

Differences from diffusers, all on purpose:

- **One conditioning embedder.** diffusers gives every block its own copy of the
  timestep + class embedder (``transformer_blocks.i.norm1.emb``); the DiT paper and its
  released checkpoints have one, and the diffusers conversion copies it into every block.
  Ours has one (``emb``) unless ``per_block_embedding=True``: with tied copies, unlearning
  would treat 28 copies of one weight as independent parameters (a saliency mask could keep
  one copy and change another) and XL/2 would carry 77M redundant parameters. The
  converter checks that the copies are equal and says so when they are not.
- **Output.** ``__call__`` returns the noise prediction eps ``[B, H, W, in_channels]``, the
  first half of the channels of a learned-sigma model (``out_channels = 2 in_channels``),
  which is all that our eps-MSE objectives and samplers use (diffusers' ``DiTPipeline``
  drops the variance half the same way); ``full_output=True`` returns every channel.
- **Timestep frequencies.** diffusers' ``CombinedTimestepLabelEmbeddings`` spaces the 128
  frequencies as ``exp(-ln(10^4) i / 127)`` (``downscale_freq_shift=1``); the DiT code the
  released checkpoints were trained with (facebookresearch/DiT ``TimestepEmbedder``, from
  GLIDE) uses ``/ 128``. Ours defaults to the original (``time_freq_shift=0``), so a
  converted facebook/DiT-XL-2-256 computes the function it was trained as;
  ``time_freq_shift=1`` is diffusers' (the parity tests use it; models trained in
  diffusers want it).
- **Label dropout** for classifier-free guidance happens in the training step
  (:func:`jaxunlearn.diffusion.train.train_diffusion` replaces labels with the null class
  ``num_class_embeds - 1``), as for our UNet, not inside the model.
"""

from __future__ import annotations

import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models.unet import timestep_embedding

# diffusers' DiTTransformer2DModel configurations of the paper's models (Table 1).
DIT_CONFIGS = {
    'DiT-XL/2': dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, patch_size=2),
    'DiT-XL/4': dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, patch_size=4),
    'DiT-L/2': dict(num_layers=24, num_attention_heads=16, attention_head_dim=64, patch_size=2),
    'DiT-B/2': dict(num_layers=12, num_attention_heads=12, attention_head_dim=64, patch_size=2),
    'DiT-S/2': dict(num_layers=12, num_attention_heads=6, attention_head_dim=64, patch_size=2),
    'tiny': dict(num_layers=4, num_attention_heads=4, attention_head_dim=16, patch_size=2),
}


def sincos_2d(dim: int, grid_h: int, grid_w: int, base_size: int) -> np.ndarray:
  """Fixed positions ``[grid_h * grid_w, dim]`` (row-major patches), as diffusers'
  ``get_2d_sincos_pos_embed``: the first half of the channels encodes the column, the second
  the row, each ``[sin, cos]`` of ``pos / 10000^(i / (dim/4))``, positions scaled by
  ``base_size / grid``; computed in float64."""
  if dim % 4:
    raise ValueError(f'the DiT width must be divisible by 4 for 2D sin-cos positions, got {dim}')

  def one_axis(pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows = np.arange(grid_h, dtype=np.float64) / (grid_h / base_size)
  cols = np.arange(grid_w, dtype=np.float64) / (grid_w / base_size)
  col_of, row_of = np.meshgrid(cols, rows, indexing='xy')  # both [grid_h, grid_w]
  return np.concatenate([one_axis(col_of), one_axis(row_of)], axis=1).astype(np.float32)


def _layer_norm(x, eps: float):
  """LayerNorm without affine parameters, in float32 (diffusers: elementwise_affine=False)."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class TimestepLabelEmbedding(nn.Module):
  """diffusers' ``CombinedTimestepLabelEmbeddings``: 256-channel sinusoidal timestep
  features (cos first, frequency shift ``freq_shift``) through Linear-SiLU-Linear, plus a class
  embedding with ``num_classes + 1`` rows (the last: the null class of guidance)."""

  features: int
  num_classes: int
  freq_shift: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, timesteps, labels):
    t = timestep_embedding(timesteps, 256, flip_sin_to_cos=True, freq_shift=self.freq_shift)
    t = nn.Dense(self.features, dtype=self.dtype, name='timestep_embedder_linear_1')(t)
    t = nn.Dense(self.features, dtype=self.dtype, name='timestep_embedder_linear_2')(nn.silu(t))
    table = nn.Embed(self.num_classes + 1, self.features, name='class_embedder_embedding_table')
    return t + table(labels).astype(t.dtype)


class SelfAttention(nn.Module):
  """diffusers' ``Attention`` on tokens (``AttnProcessor2_0``): q, k, v projections,
  softmax(q k^T / sqrt(head_dim)) v over all tokens, output projection, dropout."""

  heads: int
  head_dim: int
  use_bias: bool = True
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, _ = x.shape
    dim = self.heads * self.head_dim
    q, k, v = (nn.Dense(dim, use_bias=self.use_bias, dtype=self.dtype, name=name)(x)
               .reshape(b, n, self.heads, self.head_dim) for name in ('to_q', 'to_k', 'to_v'))
    out = jax.nn.dot_product_attention(q, k, v).reshape(b, n, dim)
    out = nn.Dense(dim, dtype=self.dtype, name='to_out_0')(out)
    return nn.Dropout(self.dropout, deterministic=self.deterministic)(out)


class DiTBlock(nn.Module):
  """diffusers' ``BasicTransformerBlock`` with ``norm_type='ada_norm_zero'``: the
  conditioning gives shift, scale and gate for attention and for the MLP; each branch is
  ``x + gate * f(LN(x) (1 + scale) + shift)``. With ``norm1_linear`` at zero (the DiT
  initialisation) every gate is zero and the block is the identity."""

  heads: int
  head_dim: int
  ff_mult: int = 4
  norm_eps: float = 1e-5
  attention_bias: bool = True
  dropout: float = 0.0
  deterministic: bool = True
  zero_init: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    dim = self.heads * self.head_dim
    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    mod = nn.Dense(6 * dim, kernel_init=init, dtype=self.dtype, name='norm1_linear')(
        nn.silu(cond))[:, None, :]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
    h = _layer_norm(x, 1e-6) * (1 + scale_msa) + shift_msa
    h = SelfAttention(self.heads, self.head_dim, self.attention_bias, self.dropout,
                      self.deterministic, self.dtype, name='attn1')(h)
    x = x + gate_msa * h
    h = _layer_norm(x, self.norm_eps) * (1 + scale_mlp) + shift_mlp
    h = nn.gelu(nn.Dense(dim * self.ff_mult, dtype=self.dtype, name='ff_net_0_proj')(h),
                approximate=True)
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = nn.Dense(dim, dtype=self.dtype, name='ff_net_2')(h)
    return x + gate_mlp * h


class DiT(nn.Module):
  """``diffusers.DiTTransformer2DModel`` in Flax: ``model.apply(variables, x [B, H, W, C],
  timesteps [B] or scalar, class_labels [B], train=False) -> eps [B, H, W, C]``.

  The first attributes are ``DiTTransformer2DModel``'s config keys (defaults: diffusers',
  i.e. DiT-XL/2 on 32x32x4 latents with 1000 classes); :data:`DIT_CONFIGS` has the paper's
  sizes. ``num_embeds_ada_norm`` is the number of classes; the class table has one more
  row, the null class (``num_class_embeds - 1``).

  Extra attributes: ``time_freq_shift`` (0: the original DiT's timestep frequencies, 1:
  diffusers'; see the module docstring), ``per_block_embedding`` (a timestep/class embedder per block, as
  diffusers stores them; default one shared, as the paper), ``remat`` (recompute each
  block's activations in the backward pass), ``scan_blocks`` (the blocks as one
  ``nn.scan`` over parameters stacked on a leading axis, ``params['transformer_blocks']``;
  :func:`stack_blocks` / :func:`unstack_blocks` convert a checkpoint between the layouts).
  Use ``remat`` *with* ``scan_blocks`` to save memory: unrolled, XLA is free to schedule
  every block's recomputation early, which keeps the activations remat meant to drop (on
  XLA:CPU it does: no saving at all), while a scan's backward loop recomputes one block per
  iteration. DiT-XL/2 unlearning with remain-Hessian products at batch 32 needs both.
  ``zero_init`` (DiT's initialisation: adaLN modulations and the output layer at zero),
  ``dtype`` (computation dtype, e.g. bfloat16; parameters stay float32).
  """

  num_attention_heads: int = 16
  attention_head_dim: int = 72
  in_channels: int = 4
  out_channels: int | None = None
  num_layers: int = 28
  dropout: float = 0.0
  attention_bias: bool = True
  sample_size: int = 32
  patch_size: int = 2
  num_embeds_ada_norm: int = 1000
  norm_eps: float = 1e-5
  time_freq_shift: float = 0.0
  per_block_embedding: bool = False
  remat: bool = False
  scan_blocks: bool = False
  zero_init: bool = True
  dtype: Any = jnp.float32

  @property
  def num_class_embeds(self) -> int:
    """Rows of the class table: the classes and the null class (the last id)."""
    return self.num_embeds_ada_norm + 1

  @property
  def output_channels(self) -> int:
    return self.in_channels if self.out_channels is None else self.out_channels

  @nn.compact
  def __call__(self, x, timesteps, class_labels, train: bool = False, full_output: bool = False):
    b, height, width, channels = x.shape
    p, dim = self.patch_size, self.num_attention_heads * self.attention_head_dim
    if channels != self.in_channels or height % p or width % p:
      raise ValueError(f'DiT input {x.shape}: expected {self.in_channels} channels and a '
                       f'height and width divisible by the patch size {p}')
    if class_labels is None:
      raise ValueError('DiT is class-conditional: pass class_labels (the null class '
                       f'{self.num_class_embeds - 1} for unconditional samples)')
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
    gh, gw = height // p, width // p

    h = nn.Conv(dim, (p, p), (p, p), padding='VALID', dtype=self.dtype,
                name='pos_embed_proj')(x).reshape(b, gh * gw, dim)
    h = h + jnp.asarray(sincos_2d(dim, gh, gw, self.sample_size // p), h.dtype)

    def embedder(name):
      return TimestepLabelEmbedding(dim, self.num_embeds_ada_norm, self.time_freq_shift,
                                    self.dtype, name=name)

    shared = None if self.per_block_embedding else embedder('emb')(timesteps, class_labels)
    block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    block_args = (self.num_attention_heads, self.attention_head_dim, 4, self.norm_eps,
                  self.attention_bias, self.dropout, not train, self.zero_init, self.dtype)
    if self.scan_blocks:
      if shared is None:
        raise ValueError('scan_blocks needs the shared embedder: per_block_embedding=False')
      scanned = nn.scan(lambda block, carry, c: (block(carry, c), None),
                        variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                        in_axes=nn.broadcast, length=self.num_layers)
      h, _ = scanned(block_cls(*block_args, name='transformer_blocks'), h, shared)
    first = None
    for i in range(0 if self.scan_blocks else self.num_layers):
      cond = shared
      if cond is None:
        cond = embedder(f'transformer_blocks_{i}_norm1_emb')(timesteps, class_labels)
      first = cond if first is None else first
      h = block_cls(*block_args, name=f'transformer_blocks_{i}')(h, cond)
    cond = shared if shared is not None else first
    if cond is None:  # no blocks
      cond = embedder('emb')(timesteps, class_labels)

    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    shift, scale = jnp.split(
        nn.Dense(2 * dim, kernel_init=init, dtype=self.dtype, name='proj_out_1')(
            nn.silu(cond))[:, None, :], 2, axis=-1)
    h = _layer_norm(h, 1e-6) * (1 + scale) + shift
    out_c = self.output_channels
    h = nn.Dense(p * p * out_c, kernel_init=init, dtype=self.dtype, name='proj_out_2')(h)
    h = h.reshape(b, gh, gw, p, p, out_c).transpose(0, 1, 3, 2, 4, 5)
    out = h.reshape(b, height, width, out_c).astype(jnp.float32)
    return out if full_output else out[..., :self.in_channels]


def dit(name: str = 'tiny', **overrides) -> DiT:
  """A :class:`DiT` of one of :data:`DIT_CONFIGS`'s sizes, other attributes overridden.

  ``dit('DiT-XL/2', out_channels=8)`` is facebook/DiT-XL-2-256's transformer."""
  if name not in DIT_CONFIGS:
    raise ValueError(f'unknown DiT size {name!r}; known: {", ".join(DIT_CONFIGS)}')
  return DiT(**{**DIT_CONFIGS[name], **overrides})


def digits_dit(num_classes: int = 10, in_channels: int = 1, sample_size: int = 8,
               size: str = 'tiny') -> DiT:
  """The small pixel-space DiT of the generation job: ``size`` (default 'tiny': 4
  blocks of width 64, patch 2, 16 tokens on the 8x8 digits), no learned sigma, one class
  table row per class plus the null class."""
  return dit(size, in_channels=in_channels, sample_size=sample_size,
             num_embeds_ada_norm=num_classes)


def stack_blocks(params: dict) -> dict:
  """Parameters of an unrolled DiT (``transformer_blocks_0`` ... ``_{L-1}``, e.g. from the
  converter) in the ``scan_blocks=True`` layout: one ``transformer_blocks`` entry whose
  leaves are the blocks' leaves stacked on a new leading axis."""
  names = sorted((k for k in params if re.fullmatch(r'transformer_blocks_\d+', k)),
                 key=lambda k: int(k.rsplit('_', 1)[1]))
  if not names:
    raise ValueError('no transformer_blocks_<i> entries to stack: is this an unrolled DiT '
                     "(per_block_embedding=False)? Keys: " + ', '.join(sorted(params)))
  if [int(k.rsplit('_', 1)[1]) for k in names] != list(range(len(names))):
    raise ValueError(f'block indices are not 0..{len(names) - 1}: {names}')
  out = {k: v for k, v in params.items() if k not in names}
  out['transformer_blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                           *[params[k] for k in names])
  return out


def unstack_blocks(params: dict) -> dict:
  """The inverse of :func:`stack_blocks`: ``scan_blocks=True`` parameters unrolled."""
  if 'transformer_blocks' not in params:
    raise ValueError('no stacked transformer_blocks entry: these are not scan_blocks=True '
                     'DiT parameters')
  stacked = params['transformer_blocks']
  n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
  out = {k: v for k, v in params.items() if k != 'transformer_blocks'}
  for i in range(n):
    out[f'transformer_blocks_{i}'] = jax.tree.map(lambda x: x[i], stacked)
  return out


def count_params(params) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
