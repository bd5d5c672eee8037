"""Schedules, forward process, loss and samplers against diffusers' schedulers."""

import dataclasses

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxunlearn.diffusion import (NoiseSchedule, cosine_schedule, ddim_step, ddpm_step, drop_labels, eps_mse,
                                  guided_eps, linear_schedule, make_sampler, q_sample, sample,
                                  timesteps, to_grid)


@pytest.mark.parametrize('ours, theirs', [
    (lambda: linear_schedule(1000), dict(beta_schedule='linear')),
    (lambda: cosine_schedule(1000), dict(beta_schedule='squaredcos_cap_v2')),
    (lambda: linear_schedule(200, 1e-3, 0.05),
     dict(num_train_timesteps=200, beta_start=1e-3, beta_end=0.05)),
])
def test_schedules_match_diffusers(ours, theirs):
  sched = diffusers.DDPMScheduler(**theirs)
  s = ours()
  np.testing.assert_allclose(s.betas, sched.betas.numpy(), rtol=1e-6)
  # diffusers multiplies in float32, we in float64: they part by 1e-5 at alpha_bar ~ 1e-9.
  np.testing.assert_allclose(s.alphas_cumprod, sched.alphas_cumprod.numpy(), rtol=5e-5)


def test_q_sample_matches_add_noise_and_the_loss_is_the_eps_error():
  s, sched = linear_schedule(), diffusers.DDPMScheduler()
  rng = np.random.default_rng(0)
  x0, noise = rng.normal(size=(2, 4, 5, 5, 3)).astype(np.float32)  # 4 images
  t = np.array([3, 3, 500, 999])
  expected = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                             torch.from_numpy(t)).numpy()
  np.testing.assert_allclose(q_sample(s, x0, t, noise), expected, rtol=1e-5, atol=1e-6)
  eps_fn = lambda x, tt, y: 0.5 * x  # any model
  loss = eps_mse(eps_fn, s, x0, None, jax.random.key(0), t=t, noise=noise)
  np.testing.assert_allclose(loss, ((0.5 * expected - noise) ** 2).mean(axis=(1, 2, 3)),
                             rtol=1e-5)
  random_t = eps_mse(eps_fn, s, x0, None, jax.random.key(1))
  assert random_t.shape == (4,) and np.all(np.isfinite(random_t))


def _same_schedule(sched):
  """Theirs, as ours: near t = 0, 1 - alpha_bar cancels, and the last float32 bit of
  alpha_bar (we compute it in float64) shows as 1e-4 in a step."""
  return NoiseSchedule(jnp.asarray(sched.betas.numpy()), jnp.asarray(sched.alphas_cumprod.numpy()))


def test_ddpm_step_matches_diffusers():
  sched = diffusers.DDPMScheduler()  # fixed_small, clip_sample
  s = _same_schedule(sched)
  sched.set_timesteps(1000)
  rng = np.random.default_rng(1)
  x, eps = rng.normal(size=(2, 2, 3, 4, 4)).astype(np.float32)
  for t in (999, 500, 1, 0):
    gen = torch.Generator().manual_seed(t)
    expected = sched.step(torch.from_numpy(eps), t, torch.from_numpy(x),
                          generator=gen).prev_sample.numpy()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t)).numpy()
    ours = ddpm_step(s, x, eps, t, t - 1, noise)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5, err_msg=str(t))


@pytest.mark.parametrize('eta', [0.0, 0.5])
def test_ddim_step_matches_diffusers(eta):
  sched = diffusers.DDIMScheduler()
  s = _same_schedule(sched)
  sched.set_timesteps(50)
  np.testing.assert_array_equal(sched.timesteps.numpy(), timesteps(1000, 50))
  rng = np.random.default_rng(2)
  x, eps, noise = rng.normal(size=(3, 2, 3, 4, 4)).astype(np.float32)
  for t in (980, 500, 0):
    expected = sched.step(torch.from_numpy(eps), t, torch.from_numpy(x), eta=eta,
                          variance_noise=torch.from_numpy(noise)).prev_sample.numpy()
    np.testing.assert_allclose(ddim_step(s, x, eps, t, t - 20, noise, eta), expected,
                               rtol=1e-5, atol=1e-5)


def _toy_eps(x, t, labels):
  """A model that depends on x, t and the label (affine, so both sides agree exactly)."""
  shift = 0.0 if labels is None else 0.1 * labels.reshape(-1, *([1] * (x.ndim - 1)))
  return 0.3 * x + 1e-4 * t.reshape(-1, *([1] * (x.ndim - 1))) + shift


def test_whole_ddim_loop_with_guidance_matches_diffusers_step_by_step():
  sched = diffusers.DDIMScheduler()
  s = _same_schedule(sched)
  sched.set_timesteps(10)
  x_init = np.random.default_rng(3).normal(size=(2, 4, 4, 1)).astype(np.float32)
  labels, g, null = np.array([1, 2]), 3.0, 5
  x = torch.from_numpy(x_init)
  for t in sched.timesteps:
    tt = np.full(2, int(t))
    c = _toy_eps(x.numpy(), tt, labels)
    u = _toy_eps(x.numpy(), tt, np.full(2, null))
    x = sched.step(torch.from_numpy(u + g * (c - u)), t, x).prev_sample
  ours = jax.jit(lambda k: sample(_toy_eps, s, x_init.shape, k, jnp.asarray(labels),
                                  num_steps=10, guidance_scale=g, null_class=null,
                                  x_init=x_init))(jax.random.key(0))
  np.testing.assert_allclose(ours, x.numpy(), rtol=1e-4, atol=1e-5)


def test_guidance_scale_one_is_the_conditional_model_and_needs_no_null_class():
  x, t, y = jnp.ones((2, 4, 4, 1)), jnp.array([5, 6]), jnp.array([1, 2])
  np.testing.assert_array_equal(guided_eps(_toy_eps, x, t, y, 1.0, None), _toy_eps(x, t, y))
  with pytest.raises(ValueError, match='null class'):
    guided_eps(_toy_eps, x, t, y, 2.0, None)
  with pytest.raises(ValueError, match='num_steps must lie in 1..1000'):
    timesteps(1000, 0)


def test_sampler_is_one_compiled_program_for_a_unet(tiny_unet):
  model, variables = tiny_unet
  sampler = make_sampler(model, linear_schedule(), (6, 8, 8, 1), num_steps=5,
                         guidance_scale=2.0, null_class=3)
  labels = jnp.arange(6) % 3
  a = sampler(variables, jax.random.key(1), labels)
  b = sampler(variables, jax.random.key(1), labels)
  assert a.shape == (6, 8, 8, 1) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)
  assert sampler._cache_size() == 1  # one program, reused
  grid = to_grid(a)
  assert grid.shape == (16, 24, 1) and 0 <= float(grid.min()) and float(grid.max()) <= 1


def test_drop_labels_replaces_about_the_given_share():
  labels = jnp.zeros(20000, jnp.int32)
  dropped = drop_labels(labels, jax.random.key(0), 0.1, 10)
  share = float(jnp.mean(dropped == 10))
  assert 0.09 < share < 0.11 and set(np.unique(dropped)) == {0, 10}


@pytest.mark.slow  # ~30 s: DDPM training twice; the default suite keeps the classifier resume test
def test_ddpm_training_learns_and_resumes_bit_identical(tiny_unet, tmp_path):
  from jaxunlearn.checkpoint import LoopCheckpoint
  from jaxunlearn.diffusion.train import DiffusionConfig, train_diffusion
  from jaxunlearn.train import LoopControl
  model, variables = tiny_unet
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 64).astype(np.int32)
  x = np.where(np.arange(8)[None, :, None, None] < 2 + 2 * y[:, None, None, None], 0.8, -0.8)
  x = np.broadcast_to(x, (64, 8, 8, 1)).astype(np.float32)  # class = height of a bar
  config = DiffusionConfig(steps=40, batch_size=16, lr=3e-3, warmup=1)
  out, history = train_diffusion(model, x, y, config, variables=variables, progress=False)
  assert history['loss'].shape == (40,)
  assert history['loss'][-10:].mean() < 0.6 * history['loss'][:5].mean()

  class Killed(Exception):
    pass

  ckpt = lambda: LoopCheckpoint(tmp_path, every=7)
  short = DiffusionConfig(steps=20, batch_size=16, lr=3e-3, warmup=1)
  reference, _ = train_diffusion(model, x, y, short, variables=variables, progress=False)
  first = LoopControl(ckpt())

  def dying(steps, variables):  # the process "dies" after the 17th step
    if steps == 17:
      raise Killed

  with pytest.raises(Killed):
    train_diffusion(model, x, y, short, variables=variables, progress=False, control=first,
                    callback=dying, callback_every=1)
  again = LoopControl(ckpt())
  resumed, _ = train_diffusion(model, x, y, short, variables=variables, progress=False,
                               control=again)
  assert again.resumed_from == 14
  jax.tree.map(np.testing.assert_array_equal, resumed, reference)


def test_ddpm_learning_rate_warms_up_then_decays_to_zero_by_default():
  from jaxunlearn.diffusion.train import DiffusionConfig
  config = DiffusionConfig(steps=1000, lr=1e-3, warmup=100)
  lr = config.optim().over(config.steps).learning_rate()
  assert float(lr(0)) == 0.0 and float(lr(50)) == pytest.approx(5e-4)
  assert float(lr(100)) == pytest.approx(1e-3)
  assert float(lr(550)) == pytest.approx(5e-4, rel=1e-3)  # half-way through the cosine
  assert float(lr(1000)) == pytest.approx(0.0, abs=1e-9)
  constant = dataclasses.replace(config, lr_schedule='constant').optim().over(1000)
  assert float(constant.learning_rate()(1000)) == pytest.approx(1e-3)
  with pytest.raises(ValueError, match="lr_schedule must be 'constant' or 'cosine'"):
    DiffusionConfig(lr_schedule='linear')


def test_ddpm_training_with_ema_returns_the_average_of_its_weights(tiny_unet):
  """``ema_decay``: the trained model is the bias-corrected average of the weights after
  each step (what the loop's callback saw), not the last weights; it names the model in
  the cache only when set (DDPMs cached before keep their keys)."""
  from jaxunlearn.diffusion.train import DiffusionConfig, train_diffusion
  model, variables = tiny_unet
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 3, 32).astype(np.int32)
  seen = []
  config = DiffusionConfig(steps=4, batch_size=8, lr=1e-2, warmup=1, ema_decay=0.5)
  out, _ = train_diffusion(model, x, y, config, variables=variables, progress=False,
                           callback=lambda step, v: seen.append(v['params']), callback_every=1)
  assert len(seen) == 4
  weights = [0.5 ** (4 - k) for k in range(4)]  # (1 - d) d^(t - k), t = 4
  want = jax.tree.map(lambda *ps: sum(w * p for w, p in zip(weights, ps)) / sum(weights),
                      *seen)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               out['params'], want)
  assert not np.allclose(jax.tree.leaves(out['params'])[0], jax.tree.leaves(seen[-1])[0])
  assert 'ema_decay' not in DiffusionConfig().cache_dict()
  assert DiffusionConfig(ema_decay=0.999).cache_dict()['ema_decay'] == 0.999
  with pytest.raises(ValueError, match=r'ema_decay must lie in \[0, 1\)'):
    DiffusionConfig(ema_decay=1.0)


@pytest.mark.slow  # ~2 min: a classifier, a DiT and a dozen sample batches
def test_dit_training_script_watches_the_jobs_original_and_its_average(tmp_path, capsys):
  """experiments/dit_training.py at toy size: a row per scored step and kind, the original
  it leaves in the cache is the job's (the library's average, equal to the host's), and a
  second run on the same cache has no training to watch."""
  import importlib.util
  import json
  from pathlib import Path
  path = Path(__file__).parents[1] / 'experiments' / 'dit_training.py'
  spec = importlib.util.spec_from_file_location('dit_training', path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  argv = ['--seeds', '0', '--every', '2', '--set', 'ddpm.steps=4', '--set', 'ddpm.warmup=1',
          '--set', 'classifier.epochs=1', '--cache-dir', str(tmp_path / 'cache'),
          '--json', str(tmp_path / 'out' / 'results.json')]
  script.main(argv)
  results = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert [(r['step'], r['kind']) for r in results['rows']] == [
      (2, 'raw'), (2, 'ema'), (4, 'raw'), (4, 'ema')]
  final, last = results['originals'][0], results['rows'][-1]
  assert final['max_abs_diff_to_host_ema'] < 1e-5
  for key in ('UA', 'acc_remaining', 'FID'):  # the same weights, to float32 rounding
    assert final[key] == pytest.approx(last[key], rel=1e-3, abs=1.0), key
  assert results['hparams']['ddpm']['ema_decay'] == 0.999  # the DiT's recipe
  assert (tmp_path / 'out' / 'training.png').is_file()
  with pytest.raises(SystemExit, match='cached already'):
    script.main(argv)
