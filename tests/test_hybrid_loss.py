"""DiT's hybrid loss (improved DDPM's variational term) and SFR-on's DiT recipe."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.diffusion import linear_schedule
from jaxunlearn.diffusion import methods as gen_methods
from jaxunlearn.diffusion.experiment import GenerationConfig
from jaxunlearn.diffusion.methods import DIT_RECIPE, GENERATION_METHODS
from jaxunlearn.diffusion.objectives import (AdaptiveDenoisingAscent, Denoiser, Denoising,
                                             HybridDenoising)
from jaxunlearn.diffusion.schedules import q_sample, vlb_term
from jaxunlearn.diffusion.train import DiffusionConfig, init_unet
from jaxunlearn.diffusion.unlearn import GenerationTask
from jaxunlearn.methods import resolve_hparams
from jaxunlearn.models import dit

SCHEDULE = linear_schedule(1000)


def _posterior64(t):
  """float64 DDPM posterior of x_{t-1} given x_t, x0: (coef_x0, coef_xt, variance)."""
  betas = np.linspace(1e-4, 0.02, 1000)
  abar = np.cumprod(1 - betas)
  prev = np.concatenate([[1.0], abar[:-1]])
  return (betas[t] * np.sqrt(prev[t]) / (1 - abar[t]),
          (1 - prev[t]) * np.sqrt(1 - betas[t]) / (1 - abar[t]),
          betas[t] * (1 - prev[t]) / (1 - abar[t]), betas[t], abar[t])


def _case(t, seed=0):
  rng = np.random.default_rng(seed)
  x0 = np.clip(rng.standard_normal((len(t), 4, 4, 2)), -0.9, 0.9).astype(np.float32)
  noise = rng.standard_normal(x0.shape).astype(np.float32)
  xt = q_sample(SCHEDULE, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
  return x0, noise, xt


def test_vlb_is_zero_at_the_true_posterior_and_a_gaussian_kl_off_it():
  t = np.array([1, 10, 500, 999])
  x0, noise, xt = _case(t)
  ones = np.ones_like(x0)
  exact = vlb_term(SCHEDULE, x0, xt, t, noise, -ones)  # eps = noise, variance = posterior's
  np.testing.assert_allclose(exact, 0.0, atol=2e-5)
  delta = 0.3
  off = np.asarray(vlb_term(SCHEDULE, x0, xt, t, noise + delta, ones))  # variance = beta_t
  for i, ti in enumerate(t):
    cx0, _, pv, beta, abar = _posterior64(ti)
    shift = cx0 * math.sqrt(1 / abar - 1) * delta  # model mean - true mean
    kl = 0.5 * (-1 + math.log(beta / pv) + pv / beta + shift ** 2 / beta)
    assert off[i] == pytest.approx(kl / math.log(2), rel=1e-4)


def test_vlb_at_t0_is_the_discretised_likelihood_of_x0():
  t = np.array([0, 0])
  x0, noise, xt = _case(t, seed=1)
  x0[1, 0, 0, 0] = 1.0  # an edge bin: open-ended
  xt = q_sample(SCHEDULE, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
  got = np.asarray(vlb_term(SCHEDULE, x0, xt, t, noise, np.ones_like(x0)))
  std = math.sqrt(1e-4)  # model variance beta_0, mean exactly x0
  cdf = lambda z: 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
  inner = -math.log(cdf(1 / 255 / std) - cdf(-1 / 255 / std))
  edge = -math.log(1 - cdf(-1 / 255 / std))
  n = x0[0].size
  assert got[0] == pytest.approx(inner / math.log(2), rel=1e-3)
  assert got[1] == pytest.approx(((n - 1) * inner + edge) / n / math.log(2), rel=1e-3)


@pytest.fixture(scope='module')
def sigma_dit():
  model = dit('tiny', in_channels=1, sample_size=8, num_embeds_ada_norm=10, out_channels=2)
  return model, init_unet(model, (8, 8, 1))


@pytest.mark.slow
def test_hybrid_loss_trains_the_variance_only_through_its_variational_term(sigma_dit):
  model, variables = sigma_dit
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
  y = jnp.array([0, 1, 2, 3])
  key = jax.random.key(0)
  diffusion = DiffusionConfig(num_timesteps=1000)
  hybrid = Denoiser(model, diffusion, HybridDenoising())
  mse = Denoiser(model, diffusion, Denoising(reduction='mean'))
  loss_h = hybrid(variables['params'], {}, x, y, key)[0]
  # same draws: split the key as HybridDenoising does, give Denoising's eps_mse the t, noise
  assert np.all(np.asarray(loss_h) > 0)
  out_fn = lambda p, xt, t: model.apply({'params': p}, xt, t, y, full_output=True)
  k_drop, k_t, k_noise = jax.random.split(key, 3)
  t = jax.random.randint(k_t, (4,), 0, 1000)
  noise = jax.random.normal(k_noise, x.shape)
  xt = q_sample(diffusion.noise_schedule(), x, t, noise)
  out = out_fn(variables['params'], xt, t)
  want = jnp.mean((out[..., :1] - noise) ** 2, axis=(1, 2, 3)) + vlb_term(
      diffusion.noise_schedule(), x, xt, t, out[..., :1], out[..., 1:])
  np.testing.assert_allclose(loss_h, want, rtol=1e-5)
  # eps gets the MSE's gradient only (the variational term's mean is frozen)
  g_h = jax.grad(lambda o: jnp.sum(HybridDenoising()(lambda *a: o, diffusion.noise_schedule(),
                                                     x, y, key)))(out)
  g_m = jax.grad(lambda o: jnp.sum(jnp.mean((o[..., :1] - noise) ** 2, axis=(1, 2, 3))))(out)
  np.testing.assert_allclose(g_h[..., :1], g_m[..., :1], rtol=1e-5, atol=1e-8)
  assert float(jnp.abs(g_h[..., 1:]).max()) > 0
  # a model without a variance half: the mean squared error alone
  plain = dit('tiny', in_channels=1, sample_size=8, num_embeds_ada_norm=10)
  pv = init_unet(plain, (8, 8, 1))
  a = Denoiser(plain, diffusion, HybridDenoising())(pv['params'], {}, x, y, key)[0]
  out_p = plain.apply(pv, xt, t, y)
  np.testing.assert_allclose(a, jnp.mean((out_p - noise) ** 2, axis=(1, 2, 3)), rtol=1e-5)
  assert np.asarray(mse(variables['params'], {}, x, y, key)[0]).shape == (4,)
  adaptive = AdaptiveDenoisingAscent(hybrid=True)
  assert adaptive.full_output and not AdaptiveDenoisingAscent().full_output


def _class3_task(model, variables) -> GenerationTask:
  """Random 8x8 images of ten classes, class 3 to forget."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (30, 8, 8, 1)).astype(np.float32)
  y = np.arange(30) % 10
  return GenerationTask(model, variables, x[y == 3], y[y == 3], x[y != 3], y[y != 3], 10,
                        progress=False)


def test_a_dits_original_is_trained_by_its_recipe_unless_told_otherwise():
  """The DiT's original follows ``ORIGINAL_RECIPE['dit']`` (resolved hparams and cache
  key), ``--set ddpm.X`` overrides it, a ``ddpm`` of one's own is taken as it is, and the
  UNet keeps the default."""
  import dataclasses
  from jaxunlearn.diffusion.experiment import ORIGINAL_RECIPE
  from jaxunlearn.diffusion.train import DiffusionConfig
  recipe = ORIGINAL_RECIPE['dit']
  dit = GenerationConfig(model='dit')
  resolved = dit.resolved_hparams()['ddpm']
  assert {k: resolved[k] for k in recipe} == recipe
  assert resolved['batch_size'] == GenerationConfig().ddpm.batch_size  # the rest: default
  assert GenerationConfig()._replaced('ddpm') == GenerationConfig().ddpm  # the UNet
  told = GenerationConfig(model='dit', overrides={'ddpm': {'steps': 100}})._replaced('ddpm')
  assert told.steps == 100 and told.ema_decay == recipe['ema_decay']
  own = DiffusionConfig(steps=50, batch_size=64)
  assert GenerationConfig(model='dit', ddpm=own)._replaced('ddpm') == own
  assert dataclasses.asdict(dit._replaced('ddpm')) == resolved


def test_a_dit_runs_sfron_as_its_dit_code(monkeypatch, sigma_dit):
  config = GenerationConfig(model='dit')
  assert config.method_overrides('sfron') == DIT_RECIPE['sfron']
  assert config.method_overrides('salun') == {}
  assert GenerationConfig().method_overrides('sfron') == {}  # the UNet: the DDPM recipe
  mine = GenerationConfig(model='dit', methods=('sfron',),
                          overrides={'sfron': {'forget_weight': 5.0}})
  assert mine.method_overrides('sfron')['forget_weight'] == 5.0
  hp = resolve_hparams('sfron', config.method_overrides('sfron'), GENERATION_METHODS)
  seen = {}

  def fake_fisher(objective, variables, x, y, batch_size, clip_norm, parallel):
    seen.setdefault('fishers', []).append(
        (objective.loss, batch_size, clip_norm, len(y), objective.train))
    return jax.tree.map(jnp.ones_like, variables['params'])

  def fake_fit(variables, forget, retain, iterations, optim, mask, **loop):
    seen['fit'] = (forget.objective.loss, retain.objective.loss, optim, forget.objective.train)
    return variables, None
  monkeypatch.setattr(gen_methods, 'fisher_diagonal', fake_fisher)
  monkeypatch.setattr(gen_methods, 'fit_fast_slow', fake_fit)
  task = _class3_task(*sigma_dit)
  GENERATION_METHODS['sfron'].run(task, dataclasses.replace(hp, fisher_examples=20))
  (loss, *forget_fisher), (_, *retain_fisher) = seen.pop('fishers')
  assert isinstance(loss, HybridDenoising) and loss.scale == 1.0
  assert forget_fisher == [1, 0.0, 3, False] and retain_fisher == [1, 0.0, 20, False]
  forget, retain, optim, train = seen['fit']
  assert isinstance(forget, HybridDenoising) and forget.scale == -1.0
  assert forget.cond_drop_prob == 0.1 and isinstance(retain, HybridDenoising)
  assert (optim.clip_norm, optim.forget_clip_norm, optim.forget_schedule,
          optim.forget_weight) == (0.0, 1.0, 'constant', 1e-3)
  # the DDPM recipe, unchanged: adaptive summed loss, both updates clipped, cosine alpha
  ddpm = resolve_hparams('sfron', {}, GENERATION_METHODS)
  GENERATION_METHODS['sfron'].run(task, ddpm)
  forget, retain, optim, _ = seen['fit']
  assert isinstance(forget, AdaptiveDenoisingAscent) and not forget.hybrid
  assert isinstance(retain, Denoising) and retain.reduction == 'sum'
  assert (optim.clip_norm, optim.forget_schedule, optim.forget_weight) == (1.0, 'cosine', 10.0)
  assert [f[1:3] for f in seen['fishers']] == [(128, 1.0)] * 2


def test_stable_diffusion_runs_sfron_as_its_sd_code(monkeypatch, sigma_dit):
  """SFR-on's Stable Diffusion script (erase-sd's SD_SETTINGS, the digits text-to-image
  job's T2I_RECIPE): no ascent; the forget step is SalUn's pseudo-prompt loss, masked, the
  retain step the pixel-mean denoising loss, both weights 1 and constant."""
  from jaxunlearn.diffusion.methods import T2I_RECIPE
  from jaxunlearn.diffusion.objectives import RemappedClass
  from jaxunlearn.diffusion.stable_diffusion import SD_SETTINGS
  seen = {}

  def fake_fit(variables, forget, retain, iterations, optim, mask, **loop):
    seen['fit'] = (forget.objective.loss, retain.objective.loss, optim, mask is not None)
    return variables, None
  monkeypatch.setattr(gen_methods, 'fisher_diagonal', lambda objective, variables, *a, **k:
                      jax.tree.map(jnp.ones_like, variables['params']))
  monkeypatch.setattr(gen_methods, 'fit_fast_slow', fake_fit)
  task = _class3_task(*sigma_dit)
  t2i = GenerationConfig(model='t2i').method_overrides('sfron')
  assert {k: t2i[k] for k in ('forget_loss', 'loss')} == {'forget_loss': 'remap',
                                                          'loss': 'mean'}
  for settings, clip in ((SD_SETTINGS['sfron'], 0.0), (T2I_RECIPE['sfron'], 1.0)):
    GENERATION_METHODS['sfron'].run(task, resolve_hparams('sfron', settings,
                                                          GENERATION_METHODS))
    forget, retain, optim, masked = seen['fit']
    assert isinstance(forget, RemappedClass) and forget.num_classes == 10 and masked
    assert isinstance(retain, Denoising) and retain.reduction == 'mean'
    assert retain.scale == 1.0
    assert (optim.forget_schedule, optim.forget_weight, optim.clip_norm) == (
        'constant', 1.0, clip)


@pytest.mark.slow
def test_single_image_fisher_is_the_same_on_every_device_count(sigma_dit):
  """SFR-on's DiT code squares gradients of one-image batches: on 8 devices each device
  squares its own images' gradients (an 8-image batch would square their mean)."""
  from jaxunlearn.parallel import Parallel
  from jaxunlearn.saliency import accumulate_gradients, fisher_diagonal
  model, variables = sigma_dit
  objective = Denoiser(model, DiffusionConfig(num_timesteps=50), HybridDenoising())
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (11, 8, 8, 1)).astype(np.float32)
  y = np.arange(11) % 10
  one = fisher_diagonal(objective, variables, x, y, 1)
  batches = accumulate_gradients(objective, variables, x, y, 1, square=True)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batches)):
    np.testing.assert_allclose(a, np.asarray(b) / 11, rtol=1e-6, atol=1e-12)
  eight = fisher_diagonal(objective, variables, x, y, 1, parallel=Parallel('pmap', 8))
  for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10 * float(np.abs(b).max()))
  with pytest.raises(ValueError, match='empty set'):
    fisher_diagonal(objective, variables, x[:0], y[:0], 1)
