"""Stable Diffusion's networks in Flax against diffusers' and transformers' PyTorch models
with random weights: the text-conditioned UNet and the CLIP text encoder."""

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxunlearn.convert.stable_diffusion import (clip_text_config, convert_clip_text_params,
                                                  convert_unet_condition_params,
                                                  load_clip_text_encoder,
                                                  load_diffusers_unet_condition,
                                                  unet_condition_config)
from jaxunlearn.models.clip_text import CLIPTextEncoder
from jaxunlearn.models.unet_condition import UNet2DCondition, sd_v1_unet, sd_v2_unet
from tests.test_unet import _randomized

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                 down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                 up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1,
                 attention_head_dim=4, cross_attention_dim=32, norm_num_groups=8)
TINY_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=16, eos_token_id=98,
                 bos_token_id=97, pad_token_id=98)


def _unet_outputs(config, x, t, context, **model_options):
  reference = _randomized(diffusers.UNet2DConditionModel(**config), seed=0)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                         encoder_hidden_states=torch.from_numpy(context)).sample.numpy()
  model = UNet2DCondition(**unet_condition_config(dict(reference.config)), **model_options)
  params = convert_unet_condition_params(reference.state_dict(), model)
  ours = jax.jit(model.apply)({'params': params}, x, t, context)
  return np.asarray(ours).transpose(0, 3, 1, 2), expected, model, params


@pytest.mark.parametrize('options', [
    {},                                                   # SD v1.x's kind of blocks
    {'use_linear_projection': True, 'attention_head_dim': [2, 4, 4],   # SD v2.x's, 3 levels
     'block_out_channels': (32, 64, 64), 'layers_per_block': 2,
     'transformer_layers_per_block': 2, 'down_block_types': (
         'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'),
     'up_block_types': ('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D')},
])
def test_unet_condition_matches_diffusers(options):
  config = {**TINY_UNET, **options}
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 8, 8, 4)).astype(np.float32)
  t = np.array([0, 17, 999])
  context = rng.normal(size=(3, 7, 32)).astype(np.float32)
  ours, expected, _, _ = _unet_outputs(config, x, t, context)
  rel = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
  assert rel < 1e-5, rel   # measured 6e-7; the GEGLU's tanh GELU would give 3e-5
  np.testing.assert_allclose(ours, expected, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize('linear', [False, True])
def test_transformer_block_matches_diffusers_on_quiet_features(linear):
  """One ``Transformer2DModel`` on features of variance 1e-5, where its GroupNorm's eps
  (1e-6, not the resnets' 1e-5) decides the output: the whole-UNet parity cannot see it."""
  from diffusers.models.transformers.transformer_2d import Transformer2DModel
  from jaxunlearn.convert._place import check_placed, flax_targets, place_tensors, torch_to_flax
  from jaxunlearn.models.unet_condition import Transformer2D
  reference = _randomized(Transformer2DModel(
      num_attention_heads=4, attention_head_dim=8, in_channels=32, cross_attention_dim=32,
      norm_num_groups=8, use_linear_projection=linear), seed=5)
  rng = np.random.default_rng(5)
  x = (3e-3 * rng.normal(size=(2, 4, 4, 32))).astype(np.float32)
  context = rng.normal(size=(2, 5, 32)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                         encoder_hidden_states=torch.from_numpy(context)).sample.numpy()
  block = Transformer2D(4, 8, 8, use_linear_projection=linear)
  targets = flax_targets(jax.eval_shape(block.init, jax.random.key(0), x, context)['params'])
  params, unused, wrong = place_tensors(reference.state_dict(), targets,
                                        lambda k: k.replace('.', '_'), torch_to_flax)
  check_placed('Transformer2D', unused, targets, wrong)
  ours = np.asarray(block.apply({'params': params}, x, context)).transpose(0, 3, 1, 2)
  rel = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
  assert rel < 1e-5, rel


def test_unet_condition_depends_on_the_text():
  """The parity above would hold for a UNet that ignored its context if cross-attention
  contributed nothing; check that another prompt changes the output, in both models."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  t = np.array([5, 500])
  c1, c2 = (rng.normal(size=(2, 5, 32)).astype(np.float32) for _ in range(2))
  a, a_ref, model, params = _unet_outputs(TINY_UNET, x, t, c1)
  b = np.asarray(model.apply({'params': params}, x, t, c2)).transpose(0, 3, 1, 2)
  assert np.linalg.norm(a - b) > 0.05 * np.linalg.norm(a)


def test_remat_keeps_outputs_and_gradients():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  context = rng.normal(size=(2, 5, 32)).astype(np.float32)
  plain = UNet2DCondition(**TINY_UNET)
  remat = UNet2DCondition(**TINY_UNET, remat=True)
  params = plain.init(jax.random.key(0), x, 3, context)['params']
  assert jax.tree.structure(params) == jax.tree.structure(
      remat.init(jax.random.key(0), x, 3, context)['params'])

  def loss(model):
    return lambda p: jnp.sum(model.apply({'params': p}, x, 3, context) ** 2)

  g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
  # the same arithmetic, fused differently: equal to float32 rounding, leaf by leaf
  for u, v in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    assert np.linalg.norm(u - v) <= 1e-5 * np.linalg.norm(v), np.linalg.norm(u - v)


def _text_reference(config, seed=0):
  reference = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config))
  return _randomized(reference, seed)


@pytest.mark.parametrize('options,mask', [
    ({}, False),                                        # SD v1.x: quick_gelu, no mask
    ({'hidden_act': 'gelu'}, True),                     # OpenCLIP's GELU, padding masked
    ({'eos_token_id': 2}, False),                       # transformers' legacy eos id
])
def test_clip_text_encoder_matches_transformers(options, mask):
  config = {**TINY_TEXT, **options}
  reference = _text_reference(config)
  ids = np.array([[97, 5, 17, 42, 98, 98, 98, 98, 98, 98],
                  [97, 60, 3, 8, 9, 11, 13, 98, 98, 98]])
  attention = (np.arange(10)[None] <= np.array([[4], [7]])).astype(np.int64)
  with torch.no_grad():
    out = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(attention)
                    if mask else None)
  model = CLIPTextEncoder(**clip_text_config(reference.config.to_dict()))
  params = convert_clip_text_params(reference.state_dict(), model)
  states, pooled = model.apply({'params': params}, ids, attention if mask else None)
  expected = out.last_hidden_state.numpy()
  rel = np.linalg.norm(np.asarray(states) - expected) / np.linalg.norm(expected)
  assert rel < 1e-4, rel
  np.testing.assert_allclose(states, expected, atol=1e-4 * np.abs(expected).max())
  np.testing.assert_allclose(pooled, out.pooler_output.numpy(),
                             atol=1e-4 * np.abs(expected).max())


def test_pipeline_folder_loads_both_and_old_text_keys(tmp_path):
  unet = _randomized(diffusers.UNet2DConditionModel(**TINY_UNET), seed=3)
  unet.save_pretrained(tmp_path / 'unet')
  text = _text_reference(TINY_TEXT, seed=4)
  text.save_pretrained(tmp_path / 'text_encoder')
  model, params = load_diffusers_unet_condition(tmp_path)
  encoder, text_params = load_clip_text_encoder(tmp_path)
  assert model.cross_attention_dim == 32 and encoder.hidden_size == 32
  ids = np.array([[97, 4, 98, 98]])
  states = np.asarray(encoder.apply({'params': text_params}, ids)[0])
  x = np.random.default_rng(3).normal(size=(1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    expected = unet(torch.from_numpy(x.transpose(0, 3, 1, 2)), 10,
                    encoder_hidden_states=torch.from_numpy(states)).sample.numpy()
  ours = np.asarray(model.apply({'params': params}, x, 10, states)).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(ours, expected, atol=1e-4 * np.abs(expected).max())
  # checkpoints written by transformers 4.x name every tensor text_model.*
  old = {'text_model.' + k: v for k, v in text.state_dict().items()}
  old['text_model.embeddings.position_ids'] = torch.arange(16)[None]
  again = convert_clip_text_params(old, encoder)
  for u, v in zip(jax.tree.leaves(again), jax.tree.leaves(text_params)):
    np.testing.assert_array_equal(u, v)


def test_bad_configs_and_inputs_say_what_is_wrong(tmp_path):
  base = dict(diffusers.UNet2DConditionModel(**TINY_UNET).config)
  with pytest.raises(ValueError, match="class_embed_type='timestep' is not supported"):
    unet_condition_config({**base, 'class_embed_type': 'timestep'})
  with pytest.raises(ValueError, match='addition_embed_type'):
    unet_condition_config({**base, 'addition_embed_type': 'text_time'})   # SDXL
  with pytest.raises(ValueError, match='a different value per block'):
    unet_condition_config({**base, 'layers_per_block': [1, 2]})
  with pytest.raises(ValueError, match="unknown UNet2DConditionModel config key 'wat'"):
    unet_condition_config({**base, 'wat': 1})
  with pytest.raises(ValueError, match='do not split into 5 attention heads'):
    UNet2DCondition(**{**TINY_UNET, 'attention_head_dim': 5})
  model = UNet2DCondition(**TINY_UNET)
  with pytest.raises(ValueError, match='divisible by 2'):
    model.init(jax.random.key(0), jnp.zeros((1, 7, 7, 4)), 0, jnp.zeros((1, 3, 32)))
  with pytest.raises(ValueError, match=r'encoder_hidden_states must be \[batch, tokens, 32\]'):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)), 0, jnp.zeros((1, 3, 16)))
  encoder = CLIPTextEncoder(**{k: v for k, v in TINY_TEXT.items()
                               if k not in ('bos_token_id', 'pad_token_id')})
  with pytest.raises(ValueError, match='17 tokens, more than the encoder.s 16 positions'):
    encoder.init(jax.random.key(0), jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match='not a CLIP text model'):
    clip_text_config({'model_type': 't5'})
  with pytest.raises(FileNotFoundError, match='no config.json'):
    load_diffusers_unet_condition(tmp_path)
  with pytest.raises(FileNotFoundError, match='give a Stable Diffusion folder'):
    load_clip_text_encoder(tmp_path)
  wrong = UNet2DCondition(**{**TINY_UNET, 'cross_attention_dim': 16})
  with pytest.raises(ValueError, match='shapes differ'):
    convert_unet_condition_params(
        _randomized(diffusers.UNet2DConditionModel(**TINY_UNET), 0).state_dict(), wrong)


@pytest.mark.parametrize('make,params_m', [(sd_v1_unet, 859.5), (sd_v2_unet, 865.9)])
def test_full_sd_unets_instantiate_at_their_sizes(make, params_m):
  """Shapes only (no compute): the released configurations build, with their published
  parameter counts (SD v1.x's UNet 859.5M, v2.x's 865.9M)."""
  model = make()
  size = model.sample_size
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 4)), 0,
      jnp.zeros((1, 77, model.cross_attention_dim))))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert abs(count / 1e6 - params_m) < 0.1, count


def _byte_chars():
  """The 256 printable characters byte-level BPE vocabularies (GPT-2's, CLIP's) stand for
  the bytes with."""
  keep = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
          *range(ord('®'), ord('ÿ') + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return [chars[b] for b in range(256)]


def _tiny_clip_tokenizer_folder(path):
  """A CLIP BPE vocabulary of the 256 bytes (alone and word-final), the merges that make
  'three' one token, and CLIP's two special tokens."""
  import json
  chars = _byte_chars()
  merges = ['t h', 'th r', 'thr e', 'thre e</w>']
  vocab = chars + [c + '</w>' for c in chars] + ['th', 'thr', 'thre', 'three</w>',
                                                  '<|startoftext|>', '<|endoftext|>']
  path.mkdir(parents=True)
  (path / 'vocab.json').write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
  (path / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
  return {t: i for i, t in enumerate(vocab)}


def test_prompt_tokenizer_pads_and_refuses_prompts_past_the_context(tmp_path):
  from jaxunlearn.convert.stable_diffusion import load_clip_tokenizer
  vocab = _tiny_clip_tokenizer_folder(tmp_path / 'sd' / 'tokenizer')
  tokenizer = load_clip_tokenizer(tmp_path / 'sd', max_length=8)
  ids = tokenizer(['a Three', 'three'])
  start, end = vocab['<|startoftext|>'], vocab['<|endoftext|>']
  assert ids.dtype == np.int32 and ids.shape == (2, 8)
  # lower-cased, word-final pieces, the merges applied, padded with the end token
  np.testing.assert_array_equal(ids[0], [start, vocab['a</w>'], vocab['three</w>'], end,
                                         end, end, end, end])
  np.testing.assert_array_equal(ids[1, :3], [start, vocab['three</w>'], end])
  with pytest.raises(ValueError, match=r"'a b c d e f g' is 9 tokens .* more than the text "
                                       r"encoder's 8"):
    tokenizer(['three', 'a b c d e f g'])
  cut = tokenizer(['a b c d e f g'], truncate=True)
  assert cut.shape == (1, 8) and cut[0, -1] == end
  with pytest.raises(ValueError, match='no prompts'):
    tokenizer([])
  (tmp_path / 'sd' / 'tokenizer' / 'merges.txt').unlink()
  with pytest.raises(FileNotFoundError, match=r"lacks the tokenizer files \['merges.txt'\]"):
    load_clip_tokenizer(tmp_path / 'sd')


def test_text_to_image_sampling_matches_the_diffusers_pipeline(tmp_path):
  """The whole of Stable Diffusion's sampling on a tiny configuration: tokenizer, CLIP text
  encoder, the guided DDIM loop of SD's scheduler config over the text-conditioned UNet,
  the VAE's decoder; ours against ``StableDiffusionPipeline`` from the same starting
  latents, images to 1e-4."""
  from jaxunlearn.convert import load_diffusers_vae
  from jaxunlearn.convert.stable_diffusion import load_clip_tokenizer
  from jaxunlearn.diffusion import make_text_to_image_sampler, scaled_linear_schedule
  from tests.test_dit import VAE
  _tiny_clip_tokenizer_folder(tmp_path / 'sd' / 'tokenizer')
  scheduler = diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085,
                                      beta_end=0.012, clip_sample=False,
                                      set_alpha_to_one=False, steps_offset=1)
  pipe = diffusers.StableDiffusionPipeline(
      vae=_randomized(diffusers.AutoencoderKL(**{**VAE, 'sample_size': 16}), 6),
      text_encoder=_text_reference({**TINY_TEXT, 'eos_token_id': 256 * 2 + 5,
                                    'vocab_size': 256 * 2 + 6}, seed=7),
      tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tmp_path / 'sd' / 'tokenizer'),
                                                           model_max_length=16),
      unet=_randomized(diffusers.UNet2DConditionModel(**TINY_UNET), 8), scheduler=scheduler,
      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
  pipe.save_pretrained(tmp_path / 'sd')
  latents = np.random.default_rng(9).normal(size=(2, 4, 8, 8)).astype(np.float32)
  prompts = ['a three', 'three three']
  with torch.no_grad():
    expected = pipe(prompts, height=16, width=16, num_inference_steps=4, guidance_scale=3.0,
                    latents=torch.from_numpy(latents), output_type='np').images

  unet, unet_params = load_diffusers_unet_condition(tmp_path / 'sd')
  text, text_params = load_clip_text_encoder(tmp_path / 'sd')
  vae, vae_params = load_diffusers_vae(tmp_path / 'sd')
  tokenizer = load_clip_tokenizer(tmp_path / 'sd', max_length=16)
  states, _ = text.apply({'params': text_params}, tokenizer(prompts))
  null, _ = text.apply({'params': text_params}, tokenizer(['']))
  sampler = make_text_to_image_sampler(unet, vae, scaled_linear_schedule(), (8, 8, 4),
                                       num_steps=4, guidance_scale=3.0)
  images = sampler({'params': unet_params}, {'params': vae_params}, states, null,
                   jax.random.key(0), latents.transpose(0, 2, 3, 1))
  ours = np.clip((np.asarray(images) + 1) / 2, 0, 1)
  assert ours.shape == expected.shape == (2, 16, 16, 3)
  assert np.abs(expected - expected.mean()).max() > 0.05    # not a flat image
  np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_convert_sd_writes_one_checkpoint_that_loads_back(tmp_path):
  """``jaxunlearn convert-sd``: a pipeline folder -> one orbax checkpoint plus the tokenizer
  files and the scheduler config; the loaded models compute what the folder's do. A folder
  that is not Stable Diffusion's layout is refused, naming what it lacks."""
  from jaxunlearn.cli import main
  from jaxunlearn.convert.stable_diffusion import load_clip_tokenizer, load_sd_checkpoint
  from tests.test_dit import VAE
  _tiny_clip_tokenizer_folder(tmp_path / 'sd' / 'tokenizer')
  unet = _randomized(diffusers.UNet2DConditionModel(**TINY_UNET), 10)
  unet.save_pretrained(tmp_path / 'sd' / 'unet')
  _text_reference(TINY_TEXT, seed=11).save_pretrained(tmp_path / 'sd' / 'text_encoder')
  _randomized(diffusers.AutoencoderKL(**{**VAE, 'sample_size': 16}), 12).save_pretrained(
      tmp_path / 'sd' / 'vae')
  diffusers.DDIMScheduler(steps_offset=1).save_pretrained(tmp_path / 'sd' / 'scheduler')
  assert main(['convert-sd', str(tmp_path / 'sd'), str(tmp_path / 'flax')]) == 0
  sd = load_sd_checkpoint(tmp_path / 'flax', remat=True)
  assert sd['unet'].remat and sd['scheduler_config']['steps_offset'] == 1
  tokens = load_clip_tokenizer(sd['tokenizer_dir'], max_length=16)(['three'])
  states, _ = sd['text_encoder'].apply({'params': sd['text_params']}, tokens)
  x = np.random.default_rng(4).normal(size=(1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    expected = unet(torch.from_numpy(x.transpose(0, 3, 1, 2)), 10,
                    encoder_hidden_states=torch.from_numpy(np.array(states))).sample.numpy()
  ours = np.asarray(sd['unet'].apply({'params': sd['unet_params']}, x, 10, states))
  np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), expected,
                             atol=1e-4 * np.abs(expected).max())
  (tmp_path / 'sd' / 'tokenizer' / 'merges.txt').unlink()
  assert main(['convert-sd', str(tmp_path / 'sd'), str(tmp_path / 'again')]) == 2
  assert not (tmp_path / 'again').exists()
  from jaxunlearn.convert.stable_diffusion import check_sd_folder
  with pytest.raises(FileNotFoundError, match='lacks unet/config.json, text_encoder/config.json'):
    check_sd_folder(tmp_path / 'flax')
