"""CLIP's text encoder in Flax, structurally equal to transformers' ``CLIPTextModel``: the
text conditioning of Stable Diffusion.

Token embedding plus learned positions, ``num_hidden_layers`` pre-LayerNorm transformer
layers with causal self-attention (each token sees itself and the tokens before it), a
final LayerNorm. Stable Diffusion conditions its UNet on ``last_hidden_state``, all 77
positions after the final LayerNorm (v2.x's OpenCLIP encoder is the same model with its
last layer dropped from the config). ``pooled`` is the state at each sequence's first
end-of-text token (the CLIP embedding before its projection). Submodule names follow
transformers' attribute names (``encoder_layers_3_self_attn_q_proj`` for
``encoder.layers.3.self_attn.q_proj``); :mod:`jaxunlearn.convert.stable_diffusion` loads a
``text_encoder/`` folder; ``tests/test_stable_diffusion.py`` checks the outputs against a
randomly initialised ``CLIPTextModel``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),   # OpenAI CLIP (SD v1.x)
    'gelu': lambda x: nn.gelu(x, approximate=False),          # OpenCLIP (SD v2.x)
}


class CLIPTextEncoder(nn.Module):
  """``model.apply(variables, input_ids [B, L], attention_mask=None) -> (last_hidden_state
  [B, L, hidden_size], pooled [B, hidden_size])``.

  The attributes are ``CLIPTextConfig``'s keys (defaults: SD v1.x's CLIP ViT-L/14 text
  tower). ``attention_mask`` ([B, L], 1 for tokens, 0 for padding) is added to the causal
  mask as transformers does; Stable Diffusion passes none (its padding is end-of-text
  tokens that attend causally like the rest). ``eos_token_id`` 2 is transformers' legacy
  value, for which the pooled state is taken at the largest token id, as transformers
  does.
  """

  vocab_size: int = 49408
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  max_position_embeddings: int = 77
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407

  def __post_init__(self):
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f'hidden_act {self.hidden_act!r} is not supported (supported: '
                       f'{sorted(ACTIVATIONS)})')
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f'hidden_size {self.hidden_size} does not split into '
                       f'{self.num_attention_heads} heads')
    super().__post_init__()

  @nn.compact
  def __call__(self, input_ids, attention_mask=None):
    b, length = input_ids.shape
    if length > self.max_position_embeddings:
      raise ValueError(f'{length} tokens, more than the encoder\'s '
                       f'{self.max_position_embeddings} positions: tokenize with '
                       f'max_length={self.max_position_embeddings} and truncation')
    d, heads = self.hidden_size, self.num_attention_heads
    ln = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False,
                                   name=name)
    h = nn.Embed(self.vocab_size, d, name='embeddings_token_embedding')(input_ids)
    h = h + nn.Embed(self.max_position_embeddings, d,
                     name='embeddings_position_embedding')(jnp.arange(length))[None]
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]        # [1, 1, L, L]
    if attention_mask is not None:
      mask = mask & (jnp.asarray(attention_mask) > 0)[:, None, None, :]
    act = ACTIVATIONS[self.hidden_act]
    for i in range(self.num_hidden_layers):
      name = f'encoder_layers_{i}'
      x = ln(f'{name}_layer_norm1')(h)
      q, k, v = (nn.Dense(d, name=f'{name}_self_attn_{p}_proj')(x).reshape(b, length, heads, -1)
                 for p in ('q', 'k', 'v'))
      att = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(b, length, d)
      h = h + nn.Dense(d, name=f'{name}_self_attn_out_proj')(att)
      x = ln(f'{name}_layer_norm2')(h)
      x = act(nn.Dense(self.intermediate_size, name=f'{name}_mlp_fc1')(x))
      h = h + nn.Dense(d, name=f'{name}_mlp_fc2')(x)
    h = ln('final_layer_norm')(h)
    if self.eos_token_id == 2:
      at = jnp.argmax(input_ids, axis=-1)
    else:
      at = jnp.argmax(input_ids == self.eos_token_id, axis=-1)
    return h, h[jnp.arange(b), at]


def sd_v1_text_encoder(**overrides) -> CLIPTextEncoder:
  """Stable Diffusion v1.x's text encoder: CLIP ViT-L/14's text tower, 123M parameters."""
  return CLIPTextEncoder(**overrides)
