"""Our Flax DiT and AutoencoderKL against diffusers' PyTorch models with random weights."""

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxunlearn.cli import main
from jaxunlearn.convert import (convert_dit_params, convert_vae_params, dit_config,
                                load_diffusers_dit, load_diffusers_vae, load_dit_checkpoint,
                                vae_config)
from jaxunlearn.models import DiT, AutoencoderKL
from jaxunlearn.models.dit import DiTBlock, dit, sincos_2d, stack_blocks, unstack_blocks

TINY = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=3, sample_size=8, patch_size=2, num_embeds_ada_norm=5)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32),
           down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
           layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=16)


def _randomized(model, seed, tie_embedders=False):
  """Every parameter random (adaLN-Zero's zeros would hide a swapped shift/scale/gate);
  with ``tie_embedders`` every block's timestep/class embedder is block 0's, as in the
  released DiT checkpoints."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    if tie_embedders:
      first = model.transformer_blocks[0].norm1.emb.state_dict()
      for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(first)
  return model.eval()


def _torch_dit(model, x, t, labels):
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2)), timestep=torch.from_numpy(t),
                 class_labels=torch.from_numpy(labels)).sample.numpy().transpose(0, 2, 3, 1)


def _inputs(seed=0, size=8, channels=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(3, size, size, channels)).astype(np.float32), np.array([0, 17, 999]),
          np.array([0, 3, 5]))  # 5: the null class


def _rel(a, b):
  return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


@pytest.mark.parametrize('tied', [True, False])
def test_converted_dit_matches_diffusers(tied):
  reference = _randomized(diffusers.DiTTransformer2DModel(**TINY), 0, tie_embedders=tied)
  x, t, labels = _inputs()
  expected = _torch_dit(reference, x, t, labels)
  model = DiT(**dit_config(dict(reference.config)), time_freq_shift=1,
              per_block_embedding=not tied)
  params = convert_dit_params(reference.state_dict(), model)
  if tied:  # one embedder, not one per block
    assert 'emb' in params and 'transformer_blocks_1_norm1_emb' not in params
  out = jax.jit(lambda p, *a: model.apply({'params': p}, *a, full_output=True))(
      params, x, t, labels)
  assert out.shape == expected.shape == (3, 8, 8, 8)
  assert _rel(out, expected) < 1e-4
  eps = model.apply({'params': params}, x, t, labels)  # the eps half of learned sigma
  assert eps.shape == (3, 8, 8, 4) and _rel(eps, np.asarray(out)[..., :4]) < 1e-5


def test_dit_on_larger_inputs_than_its_sample_size_interpolates_positions_as_diffusers():
  reference = _randomized(diffusers.DiTTransformer2DModel(**{**TINY, 'num_layers': 1}), 1)
  x, t, labels = _inputs(1, size=12)
  model = DiT(**dit_config(dict(reference.config)), time_freq_shift=1, per_block_embedding=True)
  params = convert_dit_params(reference.state_dict(), model)
  out = model.apply({'params': params}, x, t, labels, full_output=True)
  assert _rel(out, _torch_dit(reference, x, t, labels)) < 1e-4


def test_sincos_positions_match_diffusers():
  from diffusers.models.embeddings import get_2d_sincos_pos_embed
  for dim, grid, base in ((16, 4, 4), (1152, 16, 16), (32, 6, 4)):
    np.testing.assert_allclose(sincos_2d(dim, grid, grid, base),
                               get_2d_sincos_pos_embed(dim, grid, base_size=base).numpy(),
                               atol=1e-6)


def test_timestep_features_default_to_the_original_dit_and_differ_from_diffusers():
  """The DiT code that trained the released checkpoints: cos then sin of
  t exp(-ln(1e4) i / 128); diffusers divides by 127."""
  from jaxunlearn.models.dit import TimestepLabelEmbedding
  t = np.array([0.0, 1.0, 37.0, 999.0])
  freqs = np.exp(-np.log(10000.0) * np.arange(128) / 128)
  original = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], 1)
  feats = {}
  for shift in (0.0, 1.0):
    emb = TimestepLabelEmbedding(8, 3, freq_shift=shift)
    v = emb.init(jax.random.key(0), t, np.zeros(4, np.int32))
    feats[shift] = emb.apply(v, t, np.zeros(4, np.int32), capture_intermediates=True,
                             mutable=['intermediates'])[1]['intermediates']
  kernel = v['params']['timestep_embedder_linear_1']
  first = lambda f: f['timestep_embedder_linear_1']['__call__'][0]
  np.testing.assert_allclose(first(feats[0.0]), original @ kernel['kernel'] + kernel['bias'],
                             rtol=1e-4, atol=1e-5)
  assert not np.allclose(first(feats[1.0]), first(feats[0.0]), atol=1e-3)


def test_adaln_zero_blocks_are_the_identity_at_initialisation():
  block = DiTBlock(heads=2, head_dim=8)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16))
  cond = jax.random.normal(jax.random.key(1), (2, 16))
  variables = block.init(jax.random.key(2), x, cond)
  np.testing.assert_array_equal(block.apply(variables, x, cond), x)
  # ...and the whole DiT predicts zero: the final adaLN and projection start at zero too.
  model = dit('tiny', in_channels=1, sample_size=8, num_embeds_ada_norm=10)
  xs = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
  v = model.init(jax.random.key(4), xs, jnp.array([3, 500]), jnp.array([1, 10]))
  np.testing.assert_array_equal(model.apply(v, xs, jnp.array([3, 500]), jnp.array([1, 10])), 0)
  # A block that is not zero-initialised is not the identity (the test above could fail).
  other = DiTBlock(heads=2, head_dim=8, zero_init=False)
  assert not np.allclose(other.apply(other.init(jax.random.key(2), x, cond), x, cond), x)


@pytest.mark.slow  # ~15 s; the scanned-blocks test below covers remat in the default suite
def test_remat_and_bfloat16_compute_the_same_function():
  model = dit('tiny', in_channels=1, sample_size=8, num_embeds_ada_norm=10, zero_init=False)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  t, y = jnp.array([1, 10, 100, 999]), jnp.array([0, 1, 2, 10])
  params = model.init(jax.random.key(1), x, t, y)['params']

  def loss(m):
    return lambda p: jnp.mean(m.apply({'params': p}, x, t, y) ** 2)

  g = jax.grad(loss(model))(params)
  g_remat = jax.grad(loss(model.clone(remat=True)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  low = model.clone(dtype=jnp.bfloat16).apply({'params': params}, x, t, y)
  assert low.dtype == jnp.float32 and _rel(low, model.apply({'params': params}, x, t, y)) < 0.05


@pytest.mark.slow
def test_scanned_blocks_compute_the_same_function_on_stacked_parameters():
  model = dit('tiny', in_channels=1, sample_size=8, num_embeds_ada_norm=10, zero_init=False)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  t, y = jnp.array([1, 10, 100, 999]), jnp.array([0, 1, 2, 10])
  params = model.init(jax.random.key(1), x, t, y)['params']
  scanned = model.clone(scan_blocks=True, remat=True)
  stacked = stack_blocks(params)
  # The layout scan_blocks initialises is the stacked one, leaf for leaf.
  fresh = scanned.init(jax.random.key(1), x, t, y)['params']
  assert jax.tree.map(jnp.shape, fresh) == jax.tree.map(jnp.shape, stacked)
  assert stacked['transformer_blocks']['attn1']['to_q']['kernel'].shape[0] == model.num_layers
  np.testing.assert_allclose(scanned.apply({'params': stacked}, x, t, y),
                             model.apply({'params': params}, x, t, y), rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p: jnp.mean(m.apply({'params': p}, x, t, y) ** 2)
  g, g_scan = jax.grad(loss(model))(params), jax.grad(loss(scanned))(stacked)
  for a, b in zip(jax.tree_util.tree_leaves(stack_blocks(g)), jax.tree_util.tree_leaves(g_scan)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  back = unstack_blocks(stacked)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, params))
  with pytest.raises(ValueError, match='per_block_embedding=False'):
    model.clone(scan_blocks=True, per_block_embedding=True).init(jax.random.key(1), x, t, y)
  with pytest.raises(ValueError, match='no transformer_blocks_'):
    stack_blocks({'emb': {}})
  with pytest.raises(ValueError, match='not scan_blocks=True'):
    unstack_blocks(params)


@pytest.mark.slow
def test_scanned_remat_blocks_and_recomputed_products_shrink_the_hvp_step():
  """XLA's memory estimate of one remain-Hessian-preconditioned step: only blocks scanned
  *and* rematerialised, with products recomputed, cut it (unrolled remat saves nothing)."""
  from jaxunlearn.diffusion.objectives import Denoiser, Denoising
  from jaxunlearn.diffusion.train import DiffusionConfig
  from jaxunlearn.step import batch_objective
  from jaxunlearn.transforms import precondition_by_remain_hessian

  shape, n = (16, 16, 16, 4), 16

  def temporaries(remat, scan, recompute):
    model = dit('tiny', in_channels=4, sample_size=16, num_embeds_ada_norm=10, remat=remat,
                scan_blocks=scan)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape),
                                               jnp.zeros(n), jnp.zeros(n, jnp.int32))['params'])
    tx = precondition_by_remain_hessian(iters=3, recompute=recompute)
    batch = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((n,), jnp.int32),
             jax.ShapeDtypeStruct((n,), jnp.float32))
    denoiser = Denoiser(model, DiffusionConfig(num_timesteps=100), Denoising(1.0, 0.1, 10))

    def obj(b, key):  # the batch loss the steps differentiate (step.batch_objective)
      return lambda p: batch_objective(denoiser, {}, b, key)(p)[0]

    def step(p, b):
      g = jax.grad(obj(b, jax.random.key(0)))(p)
      return tx.update(g, tx.init(p), p, retain_loss_fn=obj(b, jax.random.key(1)))[0]
    return jax.jit(step).lower(params, batch).compile().memory_analysis().temp_size_in_bytes

  plain = temporaries(False, False, False)
  lean = temporaries(True, True, True)
  assert lean < 0.5 * plain, (lean, plain)
  assert temporaries(True, True, False) > 1.5 * lean  # the stored linearisation costs


def test_converted_vae_matches_diffusers():
  reference = _randomized(diffusers.AutoencoderKL(**VAE), 2)
  x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    dist = reference.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
    mean, logvar = dist.mean.numpy(), dist.logvar.numpy()
    decoded = reference.decode(dist.mean).sample.numpy()
  vae = AutoencoderKL(**vae_config(dict(reference.config)))
  params = convert_vae_params(reference.state_dict(), vae)
  ours_mean, ours_logvar = vae.apply({'params': params}, x, method=AutoencoderKL.encode)
  assert _rel(ours_mean, mean.transpose(0, 2, 3, 1)) < 1e-4
  assert _rel(ours_logvar, logvar.transpose(0, 2, 3, 1)) < 1e-4
  ours = jax.jit(vae.apply)({'params': params}, x)  # reconstruction through the mean
  assert _rel(ours, decoded.transpose(0, 2, 3, 1)) < 1e-4
  z = vae.apply({'params': params}, x, method=AutoencoderKL.encode_latents)
  np.testing.assert_allclose(z, ours_mean * reference.config.scaling_factor, rtol=1e-6)
  back = vae.apply({'params': params}, z, method=AutoencoderKL.decode_latents)
  np.testing.assert_allclose(back, ours, rtol=1e-4, atol=1e-5)
  # Checkpoints saved before diffusers 0.14 name attention query/key/value/proj_attn.
  old = {k.replace('to_q', 'query').replace('to_k', 'key').replace('to_v', 'value')
         .replace('to_out.0', 'proj_attn'): v for k, v in reference.state_dict().items()}
  assert any('proj_attn' in k for k in old)
  jax.tree_util.tree_map(np.testing.assert_array_equal, convert_vae_params(old, vae), params)


def test_pipeline_folder_to_orbax_checkpoint_and_back(tmp_path):
  """The users' path: a DiT pipeline folder (transformer/ and vae/) -> jaxunlearn
  convert-dit -> an orbax checkpoint that loads into the same functions."""
  dit_ref = _randomized(diffusers.DiTTransformer2DModel(**TINY), 3, tie_embedders=True)
  vae_ref = _randomized(diffusers.AutoencoderKL(**VAE), 4)
  dit_ref.save_pretrained(tmp_path / 'pipe' / 'transformer')
  vae_ref.save_pretrained(tmp_path / 'pipe' / 'vae')
  model, params = load_diffusers_dit(tmp_path / 'pipe', time_freq_shift=1)
  assert not model.per_block_embedding and model.num_class_embeds == 6
  vae, vae_params = load_diffusers_vae(tmp_path / 'pipe')
  assert main(['convert-dit', str(tmp_path / 'pipe'), str(tmp_path / 'flax'),
               '--time-freq-shift', '1']) == 0
  model2, params2, vae2, vae_params2 = load_dit_checkpoint(tmp_path / 'flax')
  assert model2 == model and vae2 == vae
  x, t, labels = _inputs(3)
  np.testing.assert_array_equal(model2.apply({'params': params2}, x, t, labels),
                                model.apply({'params': params}, x, t, labels))
  img = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
  np.testing.assert_array_equal(vae2.apply({'params': vae_params2}, img),
                                vae.apply({'params': vae_params}, img))
  assert _rel(model2.apply({'params': params2}, x, t, labels, full_output=True),
              _torch_dit(dit_ref, x, t, labels)) < 1e-4


def test_converter_errors_say_what_does_not_fit():
  untied = _randomized(diffusers.DiTTransformer2DModel(**TINY), 5)
  with pytest.raises(ValueError, match='per_block_embedding=True'):
    convert_dit_params(untied.state_dict(), DiT(**dit_config(dict(untied.config))))
  wrong = DiT(**{**dit_config(dict(untied.config)), 'attention_head_dim': 4},
              per_block_embedding=True)
  with pytest.raises(ValueError, match='shapes differ'):
    convert_dit_params(untied.state_dict(), wrong)
  with pytest.raises(ValueError, match="activation_fn='geglu' is not supported"):
    dit_config({**dict(untied.config), 'activation_fn': 'geglu'})
  with pytest.raises(ValueError, match='only UpDecoderBlock2D'):
    vae_config({**VAE, 'up_block_types': ['AttnUpDecoderBlock2D'] * 2})
  with pytest.raises(ValueError, match='divisible by the patch size'):
    model = dit('tiny', in_channels=1, sample_size=8)
    model.init(jax.random.key(0), jnp.zeros((1, 7, 7, 1)), 0, jnp.zeros((1,), jnp.int32))
