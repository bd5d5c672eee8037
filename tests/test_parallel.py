"""Data parallelism: every method gives the same result on 8 devices as on 1.

Runs on 8 fake CPU devices (tests/conftest.py sets XLA_FLAGS before jax is imported).
Multi-device programs are awaited one by one on the CPU and pmap outputs read from device
0's shard (see jaxunlearn.parallel), which keeps XLA:CPU's collectives from aborting on a
rendezvous timeout.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_dataset
from jaxunlearn import losses
from jaxunlearn.methods import METHODS, UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.objectives import Classifier
from jaxunlearn.parallel import AXIS, Parallel, ShardKey, host_shard
from jaxunlearn.train import TrainConfig, epoch_batches, train_classifier

DEVICES = 8

# Small enough to run every method in seconds; batches of 16 = 2 examples per device, and
# sets at least one batch large (a smaller set's batch would be rounded up to 8 with
# weight-0 repeats, which BatchNorm's batch statistics see: the one known difference).
TINY = {
    'retrain': dict(epochs=1, batch_size=16), 'ft': dict(epochs=1), 'ga': dict(epochs=1),
    'rl': dict(epochs=1), 'salun': dict(epochs=1), 'salun_joint': dict(epochs=1),
    'l1_sparse': dict(epochs=1), 'iu': dict(num_samples=16), 'bs': dict(epochs=1),
    'be': dict(epochs=1), 'scrub': dict(epochs=1, msteps=1),
    'bad_teacher': dict(epochs=1), 'lur': dict(epochs=1),
    'sfron': dict(iterations=6, every=3), 'sfron_hvp': dict(iterations=2, solver_iters=2),
    'ga_l1': dict(epochs=1), 'scissorhands': dict(epochs=1), 'fisher': dict(),
}


def _task():
  """The toy unlearning task of these tests (also built by tests/multiprocess_worker.py)."""
  ds = synthetic_dataset(n_train=96, n_test=24, classes=3, size=8, seed=1)
  model = make_model('resnet1', ds.num_classes, 4)
  original = train_classifier(model, ds.x_train, ds.y_train,
                              TrainConfig(epochs=2, batch_size=16), seed=0, progress=False)
  forget = ds.y_train == 0
  return UnlearnTask(model, original, ds.x_train[forget], ds.y_train[forget],
                     ds.x_train[~forget], ds.y_train[~forget], ds.num_classes, seed=0,
                     progress=False)


@pytest.fixture(scope='module')
def task():
  return _task()


def _hparams(name):
  settings = dict(TINY[name])
  if hasattr(resolve_hparams(name), 'batch_size'):
    settings.setdefault('batch_size', 16)
  return resolve_hparams(name, settings)


def test_every_registered_method_is_covered():
  assert set(TINY) == set(METHODS), 'add the new method to TINY'


# pmap runs each method's own multi-device code paths, and sharded jit the unchanged
# single-device step (XLA partitions it): the slow suite runs every method both ways. The
# default suite (10 minutes on 2 cores) checks under pmap one method per kind of
# multi-device code (a mask or statistic reduced over the devices, the fast-slow and
# look-ahead loops, a teacher model, relabelled data; SFR-on's HVP variant, 40 s, is slow)
# and under shard one per loop kind; the other methods differ from these in their loss.
PMAP_DEFAULT = {'rl', 'salun', 'sfron', 'lur', 'scrub', 'iu', 'fisher'}
SHARD_DEFAULT = {'rl', 'lur', 'scrub'}


@pytest.mark.parametrize('name, mode', [
    pytest.param(n, mode, marks=() if n in default else pytest.mark.slow)
    for mode, default in (('pmap', PMAP_DEFAULT), ('shard', SHARD_DEFAULT))
    for n in sorted(TINY)])
def test_method_on_8_devices_equals_1_device(task, name, mode):
  hp = _hparams(name)
  single = get_method(name).run(task, hp)
  multi = get_method(name).run(dataclasses.replace(task, parallel=Parallel(mode, DEVICES)), hp)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               multi, single)


def test_random_labels_of_a_shard_are_the_global_batch_slice():
  labels = jnp.arange(32) % 5
  key = jax.random.key(3)
  whole = losses.random_labels(key, labels, 5)
  per_device = jax.pmap(
      lambda y: losses.random_labels(
          ShardKey(key, jax.lax.axis_index(AXIS) * 4, 32), y, 5), AXIS)(labels.reshape(8, 4))
  np.testing.assert_array_equal(np.ravel(per_device), whole)


@pytest.mark.parametrize('loss', ['denoising', 'dropout', 'surrogate', 'remapped'])
def test_denoising_draws_of_a_shard_are_the_global_batch_rows(loss):
  """Timesteps, noise, label dropout and SA's surrogate images under pmap: each device's
  per-example losses are the global batch's rows (a loss drawing per device would give
  every device the same draws)."""
  from jaxunlearn.diffusion import linear_schedule
  from jaxunlearn.diffusion.objectives import Denoising, RemappedClass
  fn = {'denoising': Denoising(), 'dropout': Denoising(cond_drop_prob=0.5, null_class=5),
        'surrogate': Denoising(surrogate=True), 'remapped': RemappedClass(5)}[loss]
  schedule = linear_schedule(50)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4, 4, 1)), jnp.float32)
  y = jnp.arange(16) % 5
  eps = lambda xt, t, c: 0.5 * xt + 0.01 * t[:, None, None, None] + 0.1 * c[:, None, None, None]
  key = jax.random.key(3)
  whole = fn(eps, schedule, x, y, key)
  per_device = jax.pmap(
      lambda xs, ys: fn(eps, schedule, xs, ys, ShardKey(key, jax.lax.axis_index(AXIS) * 2, 16)),
      AXIS)(x.reshape(8, 2, 4, 4, 1), y.reshape(8, 2))
  np.testing.assert_allclose(np.ravel(per_device), whole, rtol=1e-6)


def test_weighted_mean_under_pmap_is_the_global_mean_with_uneven_weights():
  values = np.arange(16, dtype=np.float32)
  weights = np.array([1] * 11 + [0] * 5, np.float32)  # padding falls on the last devices
  local = jax.pmap(lambda v, w: jax.lax.pmean(losses.weighted_mean(v, w, AXIS), AXIS),
                   AXIS)(values.reshape(8, 2), weights.reshape(8, 2))
  np.testing.assert_allclose(local[0], values[:11].mean(), rtol=1e-6)


def test_sfron_adaptive_weights_normalise_over_the_global_batch():
  per_example = -jnp.asarray(np.random.default_rng(0).uniform(0.01, 3.0, 16), jnp.float32)
  w = jnp.ones(16)
  loss = losses.AdaptiveGradientAscent(0.5)
  whole = losses.reduce_loss(loss, per_example, w)
  sharded = jax.pmap(lambda l, w: jax.lax.pmean(losses.reduce_loss(loss, l, w, AXIS), AXIS),
                     AXIS)(per_example.reshape(8, 2), w.reshape(8, 2))
  np.testing.assert_allclose(sharded[0], whole, rtol=1e-6)


def test_pmap_outputs_are_read_without_another_all_device_program():
  """What a pmapped step or batch function returns lives on device 0 alone: indexing the
  sharded output would dispatch one more program (with collectives) on all 8 devices."""
  par = Parallel('pmap', DEVICES)
  mean = par.batched(lambda w, x: jax.lax.pmean((x * w).mean(0), AXIS))
  rows = par.batched(lambda w, x: x * w, per_example=True)
  x = np.arange(32, dtype=np.float32).reshape(16, 2)
  out = mean(np.float32(2), x)
  assert out.sharding.device_set == {jax.devices()[0]}
  np.testing.assert_allclose(out, 2 * x.mean(0), rtol=1e-6)
  np.testing.assert_array_equal(rows(np.float32(2), x), 2 * x)
  step = par.compile(lambda s, b, key: (s + jax.lax.pmean(b.sum(), AXIS), {'m': s}), 1)
  state, metrics = step(par.put(np.float32(1)), np.ones(16, np.float32), jax.random.key(0))
  assert metrics['m'].sharding.device_set == {jax.devices()[0]}
  assert par.get(state) == 3.0  # 1 + the mean over devices of each device's sum of 2 ones


def test_bad_settings_are_clear_errors():
  with pytest.raises(ValueError, match='one of none, pmap, shard'):
    Parallel('dp')
  with pytest.raises(ValueError, match='devices requested'):
    Parallel('pmap', 64)
  with pytest.raises(ValueError, match='does not split over 8 devices'):
    next(epoch_batches(100, 20, 0, 0, multiple_of=8))
  # A set smaller than the batch: its size is rounded up, the repeats weigh 0.
  idx, w = next(epoch_batches(5, 16, 0, 0, multiple_of=8))
  assert len(idx) == 8 and w.sum() == 5


def test_host_shard_gives_each_process_an_equal_disjoint_share():
  idx = np.arange(10)
  shares = [host_shard(idx, i, 3) for i in range(3)]
  assert [len(s) for s in shares] == [3, 3, 3]
  assert len(set(np.concatenate(shares))) == 9


@pytest.mark.parametrize('mode', ['pmap', 'shard'])
def test_masks_fisher_and_evaluation_on_8_devices_equal_1_device(task, mode):
  from jaxunlearn.data import Dataset, make_split
  from jaxunlearn.evaluate import evaluate, model_outputs
  from jaxunlearn.saliency import accumulate_gradients, fisher_diagonal
  par = Parallel(mode, DEVICES)
  data = task.variables, task.retain_x, task.retain_y
  ga, ce = task.statistic(losses.gradient_ascent), task.statistic(losses.cross_entropy)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, accumulate_gradients(ga, *data, batch_size=16, parallel=par),
               accumulate_gradients(ga, *data, batch_size=16))
  jax.tree.map(close, fisher_diagonal(ce, *data, batch_size=16, parallel=par),
               fisher_diagonal(ce, *data, batch_size=16))
  # Evaluation: the outputs (any length: padded to the devices) and so the MIA agree.
  x = np.concatenate([task.forget_x, task.retain_x])
  y = np.concatenate([task.forget_y, task.retain_y])
  ds = Dataset('toy', x, y, x[:45], y[:45], task.num_classes)
  split = make_split(ds, 'random:30', seed=0)
  one = model_outputs(task.model, task.variables, ds, split)
  many = model_outputs(task.model, task.variables, ds, split, par)
  jax.tree.map(close, dataclasses.asdict(many), dataclasses.asdict(one))
  assert evaluate(many, ds, split, one) == pytest.approx(evaluate(one, ds, split, one), abs=1e-6)


@pytest.mark.parametrize('name', ['salun', pytest.param('sfron_hvp', marks=pytest.mark.slow),
                                  pytest.param('lur', marks=pytest.mark.slow)])
def test_sharded_params_give_the_same_result(task, name, monkeypatch):
  """FSDP-style: params and optimizer state split over the 8 devices, batch too."""
  from jaxunlearn.train import init_variables
  model = make_model('resnet1', task.num_classes, 8)  # width 8: kernels [3, 3, 8, 8] split
  task = dataclasses.replace(task, model=model,
                             variables=init_variables(model, task.forget_x.shape[1:], 0))
  par = Parallel('shard', DEVICES, shard_params=True, min_shard_size=64)
  placed = []
  put = Parallel.put
  monkeypatch.setattr(Parallel, 'put', lambda self, tree: placed.append(put(self, tree))
                      or placed[-1])
  hp = _hparams(name)
  single = get_method(name).run(task, hp)
  multi = get_method(name).run(dataclasses.replace(task, parallel=par), hp)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               multi, single)
  # Arrays of >= 64 entries with an axis divisible by 8 are split, the others replicated.
  leaves = jax.tree.leaves(placed[-1].params)
  split = [not a.sharding.is_fully_replicated for a in leaves]
  expected = [a.size >= 64 and any(d % DEVICES == 0 for d in a.shape) for a in leaves]
  assert split == expected and any(split)
  with pytest.raises(ValueError, match="needs parallel mode 'shard'"):
    Parallel('pmap', shard_params=True)


def test_the_non_finite_guard_gathers_no_sharded_update():
  """Under shard_params a step gathers each split weight for its forward and backward
  pass, and nothing more: the guard against non-finite steps checks split updates where
  they are (it concatenated them, and the whole update was gathered on every device once
  more; this fails so)."""
  import importlib.util
  from pathlib import Path
  from jaxunlearn.optim import OptimSpec
  from jaxunlearn.step import init_state, train_step
  from jaxunlearn.train import init_variables
  model = make_model('resnet1', 10, 64)  # kernels [3, 3, 64, 64]: 36,864 entries, split
  variables = init_variables(model, (8, 8, 3), 0)
  par = Parallel('shard', DEVICES, shard_params=True)
  spec = OptimSpec(lr=0.01)
  state = par.put(init_state(variables, spec()))
  split = sum(a.nbytes for a in jax.tree.leaves(state.params)
              if not a.sharding.is_fully_replicated)
  assert split > 0.9 * sum(a.nbytes for a in jax.tree.leaves(state.params))
  batch = par.split((np.zeros((16, 8, 8, 3), np.float32), np.zeros(16, np.int32),
                     np.ones(16, np.float32)))
  step = jax.jit(functools.partial(train_step, objective=Classifier(model, losses.cross_entropy),
                                   tx=spec()))
  hlo = step.lower(state, *batch, jax.random.key(0)).compile().as_text()
  # the collectives as experiments/collectives.py reads them from the compiled program
  script = Path(__file__).resolve().parent.parent / 'experiments' / 'collectives.py'
  spec_of = importlib.util.spec_from_file_location('collectives', script)
  reader = importlib.util.module_from_spec(spec_of)
  spec_of.loader.exec_module(reader)
  gathered = reader.collectives(hlo).get('all-gather', {'bytes': 0})['bytes']
  assert 0 < gathered <= 2 * split


# ---- diffusion: every generation method, on the UNet and the DiT, on 8 devices as on 1

GEN_TINY = {
    'salun': dict(steps=2), 'sfron': dict(iterations=2), 'lur': dict(steps=2),
    'sfron_hvp': dict(iterations=2, solver_iters=2), 'ga': dict(steps=2),
    'sa': dict(steps=2, replay_per_class=2, sample_steps=2, fisher_timesteps=2),
    'esd': dict(steps=2, ddim_steps=3),
}
# Each case compiles UNet or DiT steps twice (on 2 cores: SalUn on the UNet 36 s on one
# device, 71 s under pmap; SFR-on with HVPs on the DiT 50 s and 97 s), so the cases are
# chosen, not crossed: every method runs under 'pmap' (where our code splits keys, batches
# and reductions over the devices), on the model where it has the most to get wrong; each
# model also runs one method under 'shard' (XLA partitions the unchanged one-device step).
# They run in the slow suite (the cheapest, GA on the DiT, takes 35-60 s; the others 1-3
# min); the default suite keeps test_denoising_draws_of_a_shard_are_the_global_batch_rows,
# the per-shard draws these cases depend on. A method and model's cases share a worker
# (xdist_group), so its single-device run is made once.
GEN_CASES = [
    ('ga', 'dit', 'pmap'), ('salun', 'unet', 'pmap'), ('sfron', 'unet', 'pmap'),
    ('lur', 'unet', 'pmap'), ('sa', 'unet', 'pmap'), ('sfron_hvp', 'dit', 'pmap'),
    ('salun', 'dit', 'shard'), ('ga', 'unet', 'shard'),
    # the text-to-image model (prompt ids over frozen text states: Stable Diffusion's step)
    ('esd', 't2i', 'pmap'), ('salun', 't2i', 'shard'),
]


@functools.lru_cache(maxsize=3)
def _generation_task(model_name):
  from jaxunlearn.data.digits import load_digits
  from jaxunlearn.diffusion.train import DiffusionConfig, init_unet
  from jaxunlearn.diffusion.unlearn import GenerationTask
  from jaxunlearn.models import digits_dit, digits_unet
  ds = load_digits(8, pixels='symmetric')
  forget = np.flatnonzero(ds.y_train == 3)[:24]
  retain = np.flatnonzero(ds.y_train != 3)[:40]
  if model_name == 't2i':  # labels: the prompts "a handwritten <digit>", "the digit <digit>"
    from jaxunlearn.diffusion.text import (digit_prompts, digits_text_to_image_model,
                                           freeze_text)
    prompts = digit_prompts()
    model, _ = digits_text_to_image_model(prompts, channels=(8, 16), width=8, layers=1)
    model, variables = freeze_text(model, init_unet(model, (8, 8, 1)))
    ids = lambda y: (y + 10 * (np.arange(len(y)) % 2)).astype(np.int32)  # noqa: E731
    return GenerationTask(model, variables, ds.x_train[forget], ids(ds.y_train[forget]),
                          ds.x_train[retain], ids(ds.y_train[retain]), len(prompts) - 1,
                          DiffusionConfig(num_timesteps=50), progress=False)
  model = digits_unet((8,)) if model_name == 'unet' else digits_dit()
  return GenerationTask(model, init_unet(model, (8, 8, 1)), ds.x_train[forget],
                        ds.y_train[forget], ds.x_train[retain], ds.y_train[retain], 10,
                        DiffusionConfig(num_timesteps=50), progress=False)


@functools.lru_cache(maxsize=12)  # one single-device run serves both modes
def _generation_run(name, model_name, mode):
  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  task = _generation_task(model_name)
  hp = resolve_hparams(name, {'batch_size': 16, 'lr': 1e-3, **GEN_TINY[name]},
                       GENERATION_METHODS)
  parallel = Parallel() if mode == 'none' else Parallel(mode, DEVICES)
  return GENERATION_METHODS[name].run(dataclasses.replace(task, parallel=parallel), hp)


def test_every_generation_method_is_covered():
  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  assert set(GEN_TINY) == set(GENERATION_METHODS), 'add the new generation method to GEN_TINY'
  assert {n for n, _, mode in GEN_CASES if mode == 'pmap'} == set(GEN_TINY), \
      'run every generation method under pmap in GEN_CASES'
  assert {(m, mode) for _, m, mode in GEN_CASES} == {(m, p) for m in ('unet', 'dit', 't2i')
                                                     for p in ('pmap', 'shard')}


@pytest.mark.parametrize('name, model_name, mode', [
    pytest.param(n, m, mode, marks=[pytest.mark.xdist_group(f'generation-{n}-{m}'),
                                    pytest.mark.slow])
    for n, m, mode in GEN_CASES])
def test_generation_method_on_8_devices_equals_1_device(name, model_name, mode):
  """Timesteps, noise, label dropout and random remapping are drawn for the global batch
  (ShardKey), losses normalised over it, masks and Fishers batched over the devices: the
  unlearned parameters agree up to float32 rounding amplified by two Adam steps and by
  mask entries at their threshold (measured on 2 cores: up to 1.5% of the update's norm,
  the same in pmap and shard, for two of sa/lur/sfron on the UNet; a loss drawing per
  device instead gives 94%)."""
  task = _generation_task(model_name)
  single = _generation_run(name, model_name, 'none')
  multi = _generation_run(name, model_name, mode)
  start = jax.tree.leaves(task.variables['params'])
  moved = [np.asarray(a) - b for a, b in zip(jax.tree.leaves(single['params']), start)]
  diff = [np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree.leaves(multi['params']),
                                                         jax.tree.leaves(single['params']))]
  norm = lambda leaves: np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
  assert norm(moved) > 0
  assert norm(diff) <= 0.05 * norm(moved), (norm(diff), norm(moved))


@pytest.mark.slow  # 40-70 s on 2 cores for the UNet
@pytest.mark.parametrize('model_name', ['unet', 'dit'])
def test_sampling_and_elbo_fisher_on_8_devices_equal_1_device(model_name):
  """Generation's statistics and evaluation are batched over the devices too: the images of
  ``generate`` (each image's noise drawn from its own index, so also the same in any batch
  size: one device samples them in one batch of 13, eight in two of 8) and Selective
  Amnesia's ELBO Fisher (per-image keys, weight-0 padding) agree with
  one device's to float32 rounding, under pmap and sharded jit."""
  from jaxunlearn.diffusion.unlearn import elbo_fisher, generate
  task = _generation_task(model_name)
  labels = np.arange(13, dtype=np.int32) % 10  # 13 images: padded batches on 8 devices
  run = lambda parallel, batch: generate(task.model, task.variables, task.diffusion, labels,
                                         (8, 8, 1), seed=3, num_steps=4, batch_size=batch,
                                         parallel=parallel)
  one = run(Parallel(), 13)  # one batch of 13; on 8 devices two of 8 (the last padded)
  assert one.shape == (13, 8, 8, 1) and np.isfinite(one).all()
  fisher = lambda t: elbo_fisher(t, task.forget_x[:11], task.forget_y[:11], timesteps=3,
                                 batch_size=4, seed=1)
  f_one = fisher(task)
  scale = max(float(np.max(np.abs(f))) for f in jax.tree.leaves(f_one))
  assert scale > 0
  for mode in ('pmap', 'shard'):
    parallel = Parallel(mode, DEVICES)
    np.testing.assert_allclose(run(parallel, 8), one, atol=1e-5, err_msg=mode)
    f_multi = fisher(dataclasses.replace(task, parallel=parallel))
    for a, b in zip(jax.tree.leaves(f_multi), jax.tree.leaves(f_one)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6 * scale,
                                 err_msg=mode)
