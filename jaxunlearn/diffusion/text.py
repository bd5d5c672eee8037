"""Text-to-image models as the diffusion core sees them: conditioned on a *prompt id*.

The class-conditional core (:mod:`jaxunlearn.diffusion`: objectives, samplers, methods,
:class:`~jaxunlearn.diffusion.unlearn.GenerationTask`) calls ``model.apply(variables, x,
t, labels)`` with integer labels and takes the last id as the null condition of guidance.
:class:`PromptConditioned` makes a text-conditioned UNet such a model: label ``i`` is the
``i``-th prompt of a fixed prompt set, the last one the empty prompt. Everything written for
classes then works on prompts unchanged: label dropout to the empty prompt, guided
sampling, saliency masks, Fishers, SalUn's remapping (with prompts laid out concept-major
within each template, ``(i + 1) mod P`` is the same template naming the next concept), every
method, on every device.

Two forms of one model:

- **trained with its text encoder** (``text_encoder`` set, the prompts' token ids a
  constant of the module): both networks learn, as the digits text-to-image model is
  trained;
- **frozen text** (:func:`freeze_text`): the encoder's output for every prompt is computed
  once and kept in the ``'prompts'`` variable collection (not ``params``: no method
  updates it), so only the UNet is unlearned, as Stable Diffusion's unlearning methods do,
  and no step runs the encoder again. A converted Stable Diffusion model is built in this
  form from its CLIP encoder and tokenizer (:func:`prompt_states`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models.clip_text import CLIPTextEncoder
from jaxunlearn.models.unet_condition import UNet2DCondition


class PromptConditioned(nn.Module):
  """``model.apply(variables, x, t, prompt_ids, train=False) -> eps``: ``unet`` conditioned
  on the text states of prompt ``prompt_ids[b]``.

  Attributes:
    unet: the text-conditioned UNet (params under ``'unet'``).
    num_prompts: prompts including the empty one, which is the last id (the null class of
      classifier-free guidance; :attr:`num_class_embeds` says so to the core).
    text_encoder: with ``prompt_tokens``, the encoder trained with the UNet (params under
      ``'text_encoder'``); None: the states come from the ``'prompts'`` collection
      (``{'states': [num_prompts, context_length, dim]}``, see :func:`freeze_text`).
    prompt_tokens: the prompts' token ids, ``num_prompts`` tuples of ``context_length``.
    context_length: tokens per prompt.
  """

  unet: UNet2DCondition
  num_prompts: int
  text_encoder: CLIPTextEncoder | None = None
  prompt_tokens: Sequence[Sequence[int]] = ()
  context_length: int = 77

  @property
  def num_class_embeds(self) -> int:
    return self.num_prompts

  @property
  def dropout(self) -> float:
    return self.unet.dropout

  def __post_init__(self):
    if self.text_encoder is not None:
      shape = np.shape(self.prompt_tokens)
      if shape != (self.num_prompts, self.context_length):
        raise ValueError(f'prompt_tokens must be {self.num_prompts} prompts of '
                         f'{self.context_length} token ids, got shape {shape}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, timesteps, prompt_ids, train: bool = False):
    if prompt_ids is None:
      raise ValueError('a prompt-conditioned model needs prompt ids (the empty prompt, id '
                       f'{self.num_prompts - 1}, for unconditional samples)')
    if self.text_encoder is not None:
      tokens = jnp.asarray(self.prompt_tokens, jnp.int32)[prompt_ids]
      states, _ = self.text_encoder(tokens)
    else:
      table = self.variable('prompts', 'states', jnp.zeros,
                            (self.num_prompts, self.context_length, self.unet.cross_attention_dim))
      states = table.value[prompt_ids]
    return self.unet(x, timesteps, states, train)


def prompt_states(text_encoder: CLIPTextEncoder, text_params, tokens, batch_size: int = 64):
  """The encoder's ``last_hidden_state`` of every prompt: ``[P, L, D]`` float32 numpy."""
  fn = jax.jit(lambda p, t: text_encoder.apply({'params': p}, t)[0])
  tokens = np.asarray(tokens, np.int32)
  return np.concatenate([np.asarray(fn(text_params, tokens[i:i + batch_size]))
                         for i in range(0, len(tokens), batch_size)])


def freeze_text(model: PromptConditioned, variables) -> tuple[PromptConditioned, dict]:
  """``(model, variables)`` of the same function with the text encoder frozen out: its
  states for every prompt in ``variables['prompts']``, only the UNet in ``params``."""
  if model.text_encoder is None:
    return model, variables
  states = prompt_states(model.text_encoder, variables['params']['text_encoder'],
                         model.prompt_tokens)
  frozen = PromptConditioned(model.unet, model.num_prompts,
                             context_length=model.context_length)
  return frozen, {'params': {'unet': variables['params']['unet']},
                  'prompts': {'states': jnp.asarray(states)}}


def sd_prompt_model(unet: UNet2DCondition, unet_params, states) -> tuple[PromptConditioned, dict]:
  """A converted Stable Diffusion UNet as a prompt-conditioned model over ``states``
  (``[P, 77, D]``: the CLIP states of the prompt set, the empty prompt's last;
  :func:`prompt_states`)."""
  states = jnp.asarray(states, jnp.float32)
  if states.ndim != 3 or states.shape[-1] != unet.cross_attention_dim:
    raise ValueError(f'states must be [prompts, tokens, {unet.cross_attention_dim}], got '
                     f'{states.shape}')
  model = PromptConditioned(unet, states.shape[0], context_length=states.shape[1])
  return model, {'params': {'unet': unet_params}, 'prompts': {'states': states}}


# ---------------------------------------------------------------------------------------
# The digits as a text-to-image dataset: captions from templates, a word-level vocabulary.

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
# Captions the original model is trained on, and phrasings it never sees (made of the same
# words): forgetting is judged on the held-out ones, so it must reach the concept, not one
# wording of it. Each training phrasing names the digit both ways, as a word and as a
# numeral: trained on five phrasings with mostly words, the model drew the right digit for
# "the handwritten digit 3" 27% of the time; with both forms, 63% (seed 0, 2026-12-05).
TRAIN_TEMPLATES = tuple(t.format(name=name) for t in (
    'a handwritten {name}', 'the digit {name}', 'the number {name}',
    'a drawing of the digit {name}', '{name}') for name in ('{word}', '{digit}'))
HELD_OUT_TEMPLATES = ('a drawing of the number {word}', 'the handwritten digit {digit}')


def concept_templates(templates: Sequence[str] = TRAIN_TEMPLATES) -> list[int]:
  """The indices of ``templates`` that name the digit and nothing else (``'{word}'``,
  ``'{digit}'``): the concept alone, as ESD's prompt names it."""
  return [k for k, t in enumerate(templates) if t in ('{word}', '{digit}')]


def digit_prompts(templates: Sequence[str] = TRAIN_TEMPLATES + HELD_OUT_TEMPLATES,
                  num_classes: int = 10) -> list[str]:
  """Every template filled with every digit, template-major (prompt ``k * num_classes +
  d`` is template ``k`` naming digit ``d``), then the empty prompt."""
  return [t.format(word=DIGIT_WORDS[d], digit=d) for t in templates
          for d in range(num_classes)] + ['']


def caption_ids(digits, templates, num_classes: int = 10) -> np.ndarray:
  """The prompt ids of :func:`digit_prompts` naming each of ``digits`` under each template
  index of ``templates``, template-major (``[len(templates) * len(digits)]``)."""
  digits = np.asarray(digits, np.int32)
  return np.concatenate([k * num_classes + digits for k in templates]).astype(np.int32)


class WordTokenizer:
  """A word-level tokenizer for a closed set of prompts (the digits' captions): lower-cased
  words split on spaces, ``<start>`` ids ``<end>``, padded with ``<end>`` to
  ``context_length``, as CLIP lays its tokens out. Stable Diffusion's own prompts use
  CLIP's BPE tokenizer instead (:func:`jaxunlearn.convert.stable_diffusion.load_clip_tokenizer`)."""

  def __init__(self, prompts: Sequence[str], context_length: int = 8):
    words = sorted({w for p in prompts for w in p.lower().split()})
    self.vocab = {'<start>': 0, '<end>': 1, **{w: i + 2 for i, w in enumerate(words)}}
    self.context_length = context_length

  @property
  def end_id(self) -> int:
    return 1

  def __call__(self, prompts: Sequence[str]) -> np.ndarray:
    out = []
    for prompt in prompts:
      words = prompt.lower().split()
      unknown = [w for w in words if w not in self.vocab]
      if unknown:
        raise ValueError(f'the prompt {prompt!r} has words outside the vocabulary: {unknown}')
      ids = [0, *(self.vocab[w] for w in words), 1]
      if len(ids) > self.context_length:
        raise ValueError(f'the prompt {prompt!r} is {len(ids)} tokens with its start and end '
                         f'tokens, more than the context of {self.context_length}')
      out.append(ids + [1] * (self.context_length - len(ids)))
    return np.asarray(out, np.int32)


def digits_text_to_image_model(prompts: Sequence[str], channels=(32, 64), width: int = 32,
                               layers: int = 2, context_length: int = 8,
                               in_channels: int = 1) -> tuple[PromptConditioned, WordTokenizer]:
  """The tiny text-to-image model of the digits job: a ``UNet2DCondition`` (a
  cross-attention block at every level but the top, one resnet per level, 8 groups) and a
  ``CLIPTextEncoder`` of ``layers`` layers and ``width`` channels over a word vocabulary of
  ``prompts``, trained together."""
  tokenizer = WordTokenizer(prompts, context_length)
  n = len(channels)
  down = ('DownBlock2D',) + ('CrossAttnDownBlock2D',) * (n - 1)
  unet = UNet2DCondition(
      in_channels=in_channels, out_channels=in_channels, block_out_channels=tuple(channels),
      down_block_types=down,
      up_block_types=tuple(d.replace('Down', 'Up') for d in reversed(down)),
      layers_per_block=1, attention_head_dim=4, cross_attention_dim=width, norm_num_groups=8)
  text = CLIPTextEncoder(vocab_size=len(tokenizer.vocab), hidden_size=width,
                         intermediate_size=4 * width, num_hidden_layers=layers,
                         num_attention_heads=4, max_position_embeddings=context_length,
                         hidden_act='gelu', eos_token_id=tokenizer.end_id)
  tokens = tuple(tuple(int(i) for i in row) for row in tokenizer(prompts))
  return PromptConditioned(unet, len(prompts), text, tokens, context_length), tokenizer

