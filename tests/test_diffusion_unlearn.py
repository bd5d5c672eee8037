"""Forgetting a class of a diffusion model: losses, steps, masks, methods, the job."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.cli import main
from jaxunlearn.data.digits import load_digits
from jaxunlearn.diffusion import eps_mse, linear_schedule
from jaxunlearn.diffusion.experiment import GenerationConfig, iterations_done, run_generation
from jaxunlearn.diffusion.methods import GENERATION_METHODS
from jaxunlearn.diffusion.train import DiffusionConfig, init_unet
from jaxunlearn.diffusion.unlearn import (AdaptiveDenoisingAscent, Denoising, GenerationTask,
                                          RemappedClass, elbo_fisher)
from jaxunlearn.losses import reduce_loss
from jaxunlearn.methods import resolve_hparams
from jaxunlearn.models import digits_unet
from jaxunlearn.optim import OptimSpec, fast_slow_pair

SCHEDULE = linear_schedule(100)


@pytest.fixture(scope='module')
def task():
  ds = load_digits(8, pixels='symmetric')
  model = digits_unet((8,))
  forget = ds.y_train == 3
  return GenerationTask(model, init_unet(model, (8, 8, 1)), ds.x_train[forget],
                        ds.y_train[forget], ds.x_train[~forget], ds.y_train[~forget], 10,
                        DiffusionConfig(num_timesteps=100), progress=False)


def _toy_eps(x, t, c):  # depends on the image, the timestep and the label
  return 0.5 * x + 0.01 * t[:, None, None, None] + 0.1 * c[:, None, None, None]


def test_denoising_sums_pixels_scales_and_drops_labels():
  x0 = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  labels = jnp.array([0, 1, 2, 3])
  key = jax.random.key(1)
  base = Denoising()(_toy_eps, SCHEDULE, x0, labels, key)
  _, _, k_loss = jax.random.split(key, 3)
  np.testing.assert_allclose(base, 64 * eps_mse(_toy_eps, SCHEDULE, x0, labels, k_loss),
                             rtol=1e-6)
  np.testing.assert_allclose(Denoising(-1.0)(_toy_eps, SCHEDULE, x0, labels, key), -base)
  np.testing.assert_allclose(Denoising(reduction='mean')(_toy_eps, SCHEDULE, x0, labels, key),
                             base / 64, rtol=1e-6)
  # Every label dropped to the null class: the loss of the null-labelled batch.
  dropped = Denoising(cond_drop_prob=0.999999, null_class=10)(_toy_eps, SCHEDULE, x0, labels,
                                                              key)
  np.testing.assert_allclose(dropped, 64 * eps_mse(_toy_eps, SCHEDULE, x0, jnp.full(4, 10),
                                                   k_loss), rtol=1e-6)
  # Selective Amnesia's surrogate ignores the images it is given.
  sa = Denoising(surrogate=True)
  np.testing.assert_allclose(sa(_toy_eps, SCHEDULE, x0, labels, key),
                             sa(_toy_eps, SCHEDULE, 5 * x0, labels, key))


def test_remapped_class_loss_value_and_stopped_target():
  x0 = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  labels = jnp.array([3, 3, 9])
  loss = RemappedClass(10)
  # _toy_eps differs between c and c' only by 0.1 (c - c'): 0.01, 0.01 and 0.81 per pixel.
  np.testing.assert_allclose(loss(_toy_eps, SCHEDULE, x0, labels, jax.random.key(2)),
                             [0.01, 0.01, 0.81], rtol=1e-5)
  # The gradient flows through eps(x_t, t, c) only: d/dw of mean((w c - sg(w c'))^2).
  eps_w = lambda w: (lambda x, t, c: w * c[:, None, None, None].astype(jnp.float32))
  grad = jax.grad(lambda w: jnp.mean(loss(eps_w(w), SCHEDULE, x0, labels, jax.random.key(2))))
  w = 0.7
  expected = np.mean([2 * (w * c - w * ((c + 1) % 10)) * c for c in (3, 3, 9)])
  np.testing.assert_allclose(grad(w), expected, rtol=1e-5)


def test_adaptive_ascent_weights_are_softmax_of_minus_lambda_log_loss():
  x0 = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
  labels = jnp.arange(5)
  loss = AdaptiveDenoisingAscent(lam=0.5)
  per = loss(_toy_eps, SCHEDULE, x0, labels, jax.random.key(3))
  plain = Denoising()(_toy_eps, SCHEDULE, x0, labels, jax.random.key(3))
  np.testing.assert_allclose(per, -plain, rtol=1e-6)
  w = jax.nn.softmax(-0.5 * jnp.log(plain))
  np.testing.assert_allclose(reduce_loss(loss, per, jnp.ones(5)), -jnp.sum(w * plain),
                             rtol=1e-5)


@pytest.mark.parametrize('every', [1, 2, 5])
def test_iterations_done_counts_fast_slow_updates(every):
  updates, done = 0, []
  for t in range(12):  # the fast-slow plan: a forget update first every `every`-th
    updates += 1 if t % every else 2
    done.append((updates, t + 1))
  for u, iters in done:
    assert iterations_done(u, every) == iters
  assert iterations_done(7, None) == 7
  # Which methods are fast-slow follows from their hyperparameters' type.
  from jaxunlearn.diffusion.experiment import fast_slow_every
  assert fast_slow_every(resolve_hparams('sfron_hvp', {'every': 3}, GENERATION_METHODS)) == 3
  assert fast_slow_every(resolve_hparams('salun', None, GENERATION_METHODS)) is None


def test_generation_task_refuses_bad_input(task):
  ds_x, ds_y = task.forget_x, task.forget_y
  with pytest.raises(ValueError, match=r'\[-1, 1\]'):
    dataclasses.replace(task, forget_x=(ds_x + 1) * 8)
  with pytest.raises(ValueError, match='11 class embeddings'):
    dataclasses.replace(task, model=dataclasses.replace(task.model, num_class_embeds=None))
  with pytest.raises(ValueError, match='labels must lie'):
    dataclasses.replace(task, forget_y=ds_y + 20)
  copied = dataclasses.replace(task, retain_x=np.concatenate([task.retain_x, ds_x[:2]]),
                               retain_y=np.concatenate([task.retain_y, ds_y[:2]]))
  with pytest.raises(ValueError, match='2 forget images also appear in the retain set'):
    copied.validate()
  with pytest.raises(ValueError, match='has no hyperparameter'):
    resolve_hparams('sfron', {'iters': 3}, GENERATION_METHODS)
  with pytest.raises(ValueError, match='salun.keep must be'):
    resolve_hparams('salun', {'keep': 1.5}, GENERATION_METHODS)


def _forget_loss(task, variables, loss):
  eps = lambda x, t, c: task.model.apply(variables, x, t, c)
  return float(jnp.mean(loss(eps, task.diffusion.noise_schedule(), task.forget_x[:64],
                             task.forget_y[:64], jax.random.key(7))))


def _run(task, name, **overrides):
  hp = resolve_hparams(name, {'batch_size': 32, **overrides}, GENERATION_METHODS)
  return GENERATION_METHODS[name].run(task, hp)


@pytest.mark.slow  # ~30 s each, mostly XLA compiling the tiny UNet
def test_salun_moves_only_salient_weights_and_lowers_the_remapped_loss(task):
  out = _run(task, 'salun', steps=8, lr=3e-3, keep=0.3)
  before = jax.tree.leaves(task.variables['params'])
  after = jax.tree.leaves(out['params'])
  changed = sum(int(np.sum(a != b)) for a, b in zip(after, before))
  total = sum(b.size for b in before)
  assert 0 < changed <= round(0.3 * total)  # frozen outside the mask, bit for bit
  remap = RemappedClass(10)
  assert _forget_loss(task, out, remap) < _forget_loss(task, task.variables, remap)


@pytest.mark.slow  # ~30 s each, mostly XLA compiling the tiny UNet
@pytest.mark.parametrize('name', ['sfron', 'sfron_hvp'])
def test_sfron_raises_the_forget_denoising_loss_more_than_the_retain_one(task, name):
  out = _run(task, name, iterations=6, lr=3e-3)
  loss = Denoising()
  f_before, f_after = (_forget_loss(task, v, loss) for v in (task.variables, out))
  retain = dataclasses.replace(task, forget_x=task.retain_x, forget_y=task.retain_y)
  r_before, r_after = (_forget_loss(retain, v, loss) for v in (task.variables, out))
  # From a random init retain descent lowers every loss; the forget class's falls less.
  assert f_after - f_before > r_after - r_before


@pytest.mark.parametrize('overrides, forget_drop', [({}, 0.1),
                                                     ({'forget_cond_drop_prob': 0.0}, 0.0)])
def test_sfron_drops_forget_labels_as_its_hyperparameter_says(task, monkeypatch, overrides,
                                                              forget_drop):
  """The forget loss drops labels to the null class at ``forget_cond_drop_prob`` (the
  references' training-mode 0.1 by default), the retain loss at ``cond_drop_prob``."""
  import jaxunlearn.diffusion.methods as methods
  seen = {}

  def capture(variables, forget, retain, **kw):
    seen.update(forget=forget.objective.loss, retain=retain.objective.loss)
    return variables, {}

  monkeypatch.setattr(methods, 'fit_fast_slow', capture)
  _run(task, 'sfron', mask=False, cond_drop_prob=0.2, **overrides)
  assert isinstance(seen['forget'], AdaptiveDenoisingAscent)
  assert seen['forget'].cond_drop_prob == forget_drop
  assert seen['forget'].null_class == task.null_class == 10
  assert seen['retain'].cond_drop_prob == 0.2


def test_sfron_fishers_make_its_mask_and_study_other_sets(task):
  """``sfron_fishers`` is what SFR-on's mask is made of (the library's Fisher-ratio mask of
  the conditional denoising loss, batches of 128 clipped to 1); given other sets it
  computes their Fishers the same way (experiments/sfron_mask.py's yardstick draw)."""
  from jaxunlearn.diffusion.methods import sfron_fishers
  from jaxunlearn.diffusion.objectives import Denoiser
  from jaxunlearn.saliency import fisher_diagonal, fisher_ratio_mask, sfron_mask
  small = dataclasses.replace(task, forget_x=task.forget_x[:24], forget_y=task.forget_y[:24],
                              retain_x=task.retain_x[:40], retain_y=task.retain_y[:40])
  hp = resolve_hparams('sfron', {}, GENERATION_METHODS)
  forget, retain = sfron_fishers(small, hp)
  objective = Denoiser(task.model, task.diffusion, Denoising())
  want = sfron_mask(objective, task.variables, small.forget_x, small.forget_y, small.retain_x,
                    small.retain_y, hp.gamma, batch_size=128, clip_norm=1.0)
  jax.tree.map(np.testing.assert_array_equal, fisher_ratio_mask(forget, retain, hp.gamma),
               want)
  other = (task.retain_x[40:64], task.retain_y[40:64])
  drawn, _ = sfron_fishers(small, hp, forget=other)
  jax.tree.map(np.testing.assert_array_equal, drawn,
               fisher_diagonal(objective, task.variables, *other, 128, 1.0))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, drawn, forget)))


@pytest.mark.slow
def test_elbo_fisher_is_a_mean_of_per_image_squares(task):
  """The mean over images of the squared gradient of each image's ELBO estimate (``n``
  stratified timesteps scaled by T / n), image ``i`` drawing from ``fold_in(key, i)``:
  the same in any batch size (the last batch padded with weight-0 rows)."""
  from jaxunlearn.diffusion.schedules import q_sample
  x, y, n = task.retain_x[:3], task.retain_y[:3], 4
  fisher = elbo_fisher(task, x, y, timesteps=n, batch_size=2, seed=5)
  schedule = task.diffusion.noise_schedule()
  T = schedule.num_timesteps

  def squared_grad(i):
    k_t, k_n = jax.random.split(jax.random.fold_in(jax.random.key(5), i))
    t = jnp.arange(n) * T // n + jax.random.randint(k_t, (n,), 0, T // n)
    xs, ys = jnp.repeat(x[i][None], n, 0), jnp.repeat(y[i][None], n, 0)
    noise = jax.random.normal(k_n, xs.shape)
    elbo = lambda p: T / n * jnp.sum((task.model.apply({'params': p}, q_sample(
        schedule, xs, t, noise), t, ys) - noise) ** 2)
    return jax.tree.map(jnp.square, jax.grad(elbo)(task.variables['params']))
  expected = jax.tree.map(lambda *g: sum(g) / 3, *[squared_grad(i) for i in range(3)])
  # Leaves whose gradient is zero but for rounding (a bias before a GroupNorm) are compared
  # at the scale of the whole Fisher.
  scale = max(float(np.max(e)) for e in jax.tree.leaves(expected))
  assert scale > 0
  for f, e in zip(jax.tree.leaves(fisher), jax.tree.leaves(expected)):
    np.testing.assert_allclose(f, e, rtol=1e-4, atol=1e-6 * scale)
    assert np.all(np.asarray(f) >= 0)
  for f, g in zip(jax.tree.leaves(fisher), jax.tree.leaves(
      elbo_fisher(task, x, y, timesteps=n, batch_size=3, seed=5))):
    np.testing.assert_allclose(f, g, rtol=1e-5, atol=1e-6 * scale)


def test_fast_slow_adam_chain_clips_every_update():
  spec = OptimSpec('adam', lr=1.0, momentum=0.0, weight_decay=0.0, total_steps=4, every=1,
                   forget_weight=1.0, clip_norm=0.5)
  params = {'w': jnp.zeros(3)}
  for tx in fast_slow_pair(spec):
    updates, _ = tx.update({'w': jnp.array([30.0, 40.0, 0.0])}, tx.init(params), params)
    # clipped to norm 0.5 then Adam with b1=0 normalises each coordinate: -lr sign(g).
    np.testing.assert_allclose(updates['w'], [-1.0, -1.0, 0.0], atol=1e-4)
  with pytest.raises(ValueError, match=r"optimizer must be one of \('sgd', 'adam'\)"):
    OptimSpec(optimizer='rmsprop')


def test_cli_generation_refuses_bad_settings_before_any_compute(capsys):
  assert main(['run', '--task', 'generation', '--scenario', 'random:10']) == 2
  assert 'forgets a class' in capsys.readouterr().err
  assert main(['run', '--task', 'generation', '--methods', 'salun,sfronn']) == 2
  assert "did you mean 'sfron'" in capsys.readouterr().err
  assert main(['run', '--task', 'generation', '--methods', 'sa', '--set', 'sa.steps=0']) == 2
  assert 'sa.steps must be >= 1' in capsys.readouterr().err


@pytest.mark.parametrize('argv, flags', [
    (['--task', 'generation', '--width', '32'], '--width is for --task classification'),
    (['--task', 'generation', '--tune', '--alignment-every', '3'],
     '--tune, --alignment-every are for --task classification'),
    (['--check-every', '5'], '--check-every is for --task generation'),
    (['--task', 'generation', '--alignment-every', '0'],
     '--alignment-every is for --task classification'),
])
def test_cli_refuses_a_flag_the_task_does_not_use(capsys, argv, flags):
  assert main(['run', *argv]) == 2
  assert flags in capsys.readouterr().err


def test_generation_config_takes_the_devices_and_checks_them():
  assert GenerationConfig(parallel='pmap', num_devices=8).devices().size == 8
  assert GenerationConfig(parallel='shard', num_devices=2).devices().mode == 'shard'
  with pytest.raises(ValueError, match="parallel must be 'auto', 'none', 'pmap' or 'shard'"):
    GenerationConfig(parallel='vmap').validate()
  with pytest.raises(ValueError, match='9 devices requested, 8 available'):
    GenerationConfig(parallel='pmap', num_devices=9).validate()


def test_fid_forget_tells_degenerate_samples_from_the_class_when_the_classifier_cannot():
  """A classifier that calls everything a 3 scores UA 0 both for real 3s and for blobs;
  FID_forget (the samples' distance to the real 3s) tells them apart, and each check of the
  tracker records it beside UA."""
  import flax.linen as nn

  from jaxunlearn.diffusion.experiment import ForgetTracker, _Judge
  from jaxunlearn.diffusion.methods import SFRon

  class AlwaysThree(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return jnp.zeros((x.shape[0], 10)).at[:, 3].set(1.0)

  ds = load_digits(8, pixels='symmetric')
  threes = ds.x_train[ds.y_train == 3]
  flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)  # noqa: E731
  held_out = ds.x_test[ds.y_test == 3][:30]
  blob = np.full_like(held_out, -1.0)
  blob[:, 2:6, 2:6] = 1.0
  blobs = blob + 0.05 * np.random.default_rng(0).normal(size=blob.shape).astype(np.float32)
  config = GenerationConfig(forget_samples=30, parallel='none')
  judge = _Judge(AlwaysThree(), {}, None, config, (8, 8, 1), flat, {3: flat(threes)},
                 config.devices())
  scores = {}
  for name, images in (('threes', held_out), ('blobs', blobs)):
    judge.sample = lambda unet, variables, labels, seed, images=images: images
    scores[name] = judge.forget_scores(None, None, 3, 0)
  assert scores['threes']['UA'] == scores['blobs']['UA'] == 0.0
  assert scores['blobs']['FID_forget'] > 5 * scores['threes']['FID_forget'] > 0
  tracker = ForgetTracker(judge, None, 3, 0, SFRon(), every=1)
  tracker.start_at({'UA': 1.0, 'FID_forget': 2.0})
  tracker(2, None)
  curve = tracker.report()['curve']
  assert curve['UA'] == [1.0, 0.0] and curve['FID_forget'][0] == 2.0
  assert curve['FID_forget'][1] == pytest.approx(scores['blobs']['FID_forget'])
  restored = ForgetTracker(judge, None, 3, 0, SFRon())
  restored.load_state_dict(tracker.state_dict())
  assert restored.report() == tracker.report()


@pytest.mark.slow
def test_generation_job_runs_every_method_and_writes_its_report(tmp_path):
  config = GenerationConfig(
      channels=(8,), cache_dir=str(tmp_path / 'cache'), progress=False, classifier_width=4,
      parallel='none', check_every=2, forget_samples=10, fid_samples_per_class=5, sample_steps=5,
      overrides={'ddpm': {'steps': 20, 'num_timesteps': 100}, 'classifier': {'epochs': 1},
                 'salun': {'steps': 3, 'batch_size': 32},
                 'sfron': {'iterations': 3, 'batch_size': 32},
                 'lur': {'steps': 3, 'batch_size': 32},
                 'sa': {'steps': 3, 'batch_size': 32, 'replay_per_class': 3,
                        'fisher_timesteps': 2, 'sample_steps': 5},
                 'ga': {'steps': 3, 'batch_size': 32}})
  out = tmp_path / 'out'
  results = run_generation(config, out)
  saved = json.loads((out / 'results.json').read_text())
  assert saved['methods'].keys() == set(config.methods)
  for name in config.methods:
    row = saved['per_seed'][name][0]
    assert 0 <= row['UA'] <= 100 and row['FID'] >= 0 and row['rte_s'] > 0
    assert row['FID_forget'] >= 0 and saved['original']['FID_forget']['mean'] >= 0
    assert row['curve']['iterations'][0] == 0 and row['curve']['iterations'][-1] == 3
    assert len(row['curve']['FID_forget']) == len(row['curve']['UA'])
    assert row['curve']['FID_forget'][0] == pytest.approx(saved['original']['FID_forget']['mean'])
  assert results['original']['FID']['mean'] >= 0
  (original,) = saved['original_per_seed']  # each seed's original, not only their mean
  assert original['UA'] == pytest.approx(saved['original']['UA']['mean'])
  for png in ('results.png', 'forgetting.png', 'samples.png'):
    assert (out / png).stat().st_size > 10_000
  assert not list(out.glob('grid-*.npy')) and not (out / 'progress.json').exists()


@pytest.mark.slow
def test_killed_generation_run_resumes_to_the_same_results(tmp_path, monkeypatch):
  """The generation job on the shared skeleton: killed in its second method, started again,
  it keeps the first method's row and sample grid and ends with the numbers of a run never
  interrupted."""
  from jaxunlearn.diffusion.methods import GENERATION_METHODS

  config = GenerationConfig(
      channels=(8,), cache_dir=str(tmp_path / 'cache'), progress=False, classifier_width=4,
      parallel='none', methods=('ga', 'sfron'), check_every=2, forget_samples=10,
      fid_samples_per_class=5, sample_steps=5,
      overrides={'ddpm': {'steps': 20, 'num_timesteps': 100}, 'classifier': {'epochs': 1},
                 'sfron': {'iterations': 3, 'batch_size': 32},
                 'ga': {'steps': 3, 'batch_size': 32}})
  whole = run_generation(config, tmp_path / 'whole')

  def killed(task, hp):
    raise KeyboardInterrupt
  sfron = GENERATION_METHODS['sfron']
  monkeypatch.setitem(GENERATION_METHODS, 'sfron', dataclasses.replace(sfron, fn=killed))
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    run_generation(config, out)
  assert list(json.loads((out / 'progress.json').read_text())['seeds']['0']['methods']) == ['ga']
  assert {p.name for p in out.glob('grid-*.npy')} == {'grid-original.npy', 'grid-ga.npy'}
  monkeypatch.setitem(GENERATION_METHODS, 'sfron', sfron)
  resumed = run_generation(config, out)
  for name in ('ga', 'sfron'):
    a, b = whole['per_seed'][name][0], resumed['per_seed'][name][0]
    assert (a['UA'], a['FID'], a['curve']) == (b['UA'], b['FID'], b['curve'])
  assert (out / 'samples.png').stat().st_size > 10_000 and not list(out.glob('grid-*.npy'))


@pytest.mark.slow
def test_generation_job_forgets_with_a_dit(tmp_path):
  """--model dit: the same job, methods and report on a pixel-space DiT; the DiT is cached
  under its own key (not the UNet's) and SFR-on changes it."""
  config = GenerationConfig(
      model='dit', cache_dir=str(tmp_path / 'cache'), progress=False, classifier_width=4,
      parallel='none',
      methods=('sfron', 'ga'), check_every=0, forget_samples=10, fid_samples_per_class=5,
      sample_steps=5,
      overrides={'ddpm': {'steps': 20, 'num_timesteps': 100}, 'classifier': {'epochs': 1},
                 'sfron': {'iterations': 3, 'batch_size': 32},
                 'ga': {'steps': 3, 'batch_size': 32}})
  results = run_generation(config, tmp_path / 'out')
  assert results['model']['name'] == 'DiT' and results['model']['size'] == 'tiny'
  [entry] = (tmp_path / 'cache').glob('ddpm-*')
  cached = json.loads((entry / 'config.json').read_text())
  assert cached['model'] == 'dit' and 'channels' not in cached
  for name in config.methods:
    assert 0 <= results['per_seed'][name][0]['UA'] <= 100
  assert (tmp_path / 'out' / 'samples.png').stat().st_size > 10_000
  with pytest.raises(ValueError, match="generation models: unet, ddpm-cifar10, ref-unet"):
    GenerationConfig(model='vit').validate()
  with pytest.raises(ValueError, match='unknown DiT size'):
    GenerationConfig(model='dit', dit_size='huge').validate()


def test_fid_inception_needs_an_existing_file_and_the_generation_task(tmp_path, capsys):
  with pytest.raises(ValueError, match='no such file'):
    GenerationConfig(fid_inception=str(tmp_path / 'missing.pth')).validate()
  with pytest.raises(ValueError, match='fid_real_per_class must be >= 2'):
    GenerationConfig(fid_real_per_class=1).validate()
  assert main(['run', '--fid-inception', str(tmp_path / 'x.pth')]) == 2
  assert 'is for --task generation' in capsys.readouterr().err


@pytest.mark.slow
def test_generation_job_measures_fid_in_inception_features(tmp_path):
  """The job with --fid-inception: pytorch-fid's network (random weights, from a .pth as
  the real file would be) gives the FID features of every score."""
  import torch

  from tests.torch_reference import random_fid_inception
  net, _ = random_fid_inception(seed=0)
  torch.save(net.state_dict(), tmp_path / 'pt_inception.pth')
  common = dict(
      channels=(8,), cache_dir=str(tmp_path / 'cache'), progress=False, classifier_width=4,
      methods=('ga',), parallel='none', check_every=0, forget_samples=4, fid_samples_per_class=3,
      fid_real_per_class=8, sample_steps=3, overrides={'ddpm': {'steps': 20, 'num_timesteps': 100},
                                 'classifier': {'epochs': 1}, 'ga': {'steps': 2}})
  inception = run_generation(GenerationConfig(
      fid_inception=str(tmp_path / 'pt_inception.pth'), **common), tmp_path / 'a')
  classifier = run_generation(GenerationConfig(**common), tmp_path / 'b')
  assert inception['evaluation']['fid_features'] == 'inception'
  assert inception['evaluation']['fid_real_per_class'] == 8
  assert classifier['evaluation']['fid_features'] == 'classifier'
  # Same samples (same seeds), same UA; the FID differs because the features do.
  for key in ('original', 'ga'):
    a = inception['original'] if key == 'original' else inception['methods'][key]
    b = classifier['original'] if key == 'original' else classifier['methods'][key]
    assert a['UA'] == b['UA'] and a['FID']['mean'] > 0
    assert a['FID']['mean'] != pytest.approx(b['FID']['mean'], rel=1e-3)
