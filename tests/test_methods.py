import jax
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.data import make_split
from jaxunlearn.methods import METHODS, UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.saliency import salun_mask, sfron_mask
from jaxunlearn.step import compiled_train_step, init_state, predict
from jaxunlearn.optim import OptimSpec
from jaxunlearn.train import TrainConfig, cycle_batches, fit_fast_slow, train_classifier
from jaxunlearn.transforms import set_saliency_mask

FAST = {'epochs': '2'}


@pytest.fixture(scope='module')
def task():
  from conftest import synthetic_dataset
  ds = synthetic_dataset()
  split = make_split(ds, 'class:0')
  model = make_model('resnet1', ds.num_classes)
  variables = train_classifier(model, ds.x_train, ds.y_train,
                               TrainConfig(epochs=10, batch_size=16), seed=0, progress=False)
  return UnlearnTask(model, variables, ds.x_train[split.forget], ds.y_train[split.forget],
                     ds.x_train[split.retain], ds.y_train[split.retain], ds.num_classes,
                     seed=0, progress=False)


ALL = ['retrain', 'ft', 'ga', 'rl', 'salun', 'salun_joint', 'l1_sparse', 'iu', 'bs', 'be',
       'scrub', 'bad_teacher', 'sfron', 'sfron_hvp', 'lur', 'ga_l1', 'scissorhands', 'fisher']


def test_registry_has_every_method():
  assert set(ALL) <= set(METHODS)
  with pytest.raises(ValueError, match='unknown method .*available: .*ft'):
    get_method('nope')


def test_resolve_hparams_casts_and_rejects_unknown_keys():
  hp = resolve_hparams('rl', {'lr': '0.02', 'epochs': '3', 'exclude_true_label': 'false'})
  assert hp.lr == 0.02 and hp.epochs == 3 and hp.exclude_true_label is False
  assert resolve_hparams('ft').lr == 0.01  # reference default
  with pytest.raises(ValueError, match="has no hyperparameter 'lrr'.*lr"):
    resolve_hparams('ft', {'lrr': '1'})
  with pytest.raises(ValueError, match='ft.epochs must be a int'):
    resolve_hparams('ft', {'epochs': 'ten'})


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'sfron_hvp' else n
                                  for n in ALL])
def test_every_method_returns_variables_of_the_same_structure(task, name):
  defaults = METHODS[name].defaults
  hp = resolve_hparams(name, FAST if 'epochs' in defaults else
                       {'iterations': '6'} if 'iterations' in defaults else {})
  out = get_method(name).run(task, hp)
  assert jax.tree.structure(out) == jax.tree.structure(task.variables)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), out['params'],
                                         task.variables['params']))
  assert any(changed)


def _forget_ce(task, variables):
  logits = predict(task.model, variables, task.forget_x)
  return float(losses.cross_entropy(logits, task.forget_y).mean())


def test_ga_raises_forget_loss_and_rl_forgets(task):
  before = _forget_ce(task, task.variables)
  after_ga = _forget_ce(task, get_method('ga').run(task, resolve_hparams('ga', FAST)))
  assert after_ga > before
  rl = get_method('rl').run(task, resolve_hparams('rl', {'epochs': '5', 'lr': '0.05'}))
  acc_f = np.mean(predict(task.model, rl, task.forget_x).argmax(-1) == task.forget_y)
  assert acc_f < 0.5


def test_salun_keeps_non_salient_weights_bit_identical(task):
  hp = resolve_hparams('salun', {'epochs': '3', 'lr': '0.05'})
  mask = salun_mask(task.statistic(losses.gradient_ascent), task.variables, task.forget_x,
                    task.forget_y, hp.keep, hp.batch_size)
  out = get_method('salun').run(task, hp)
  for before, after, m in zip(jax.tree.leaves(task.variables['params']),
                              jax.tree.leaves(out['params']), jax.tree.leaves(mask)):
    m = np.asarray(m) > 0
    np.testing.assert_array_equal(np.asarray(after)[~m], np.asarray(before)[~m])
  moved = sum(int(np.sum(np.asarray(a)[np.asarray(m) > 0] != np.asarray(b)[np.asarray(m) > 0]))
              for a, b, m in zip(jax.tree.leaves(out['params']),
                                 jax.tree.leaves(task.variables['params']), jax.tree.leaves(mask)))
  assert moved > 0


def test_one_salun_step_equals_hand_written_reference_step(task):
  """Our compiled masked step vs the SalUn reference step written out by hand:
  g = grad of random-label CE; g *= m; PyTorch SGD (buf = g + wd p; p -= lr buf);
  masked weights restored (the 2026 fix)."""
  lr, wd = 0.05, 5e-4
  model, variables = task.model, task.variables
  mask = salun_mask(task.statistic(losses.gradient_ascent), variables, task.forget_x,
                    task.forget_y, 0.5)
  optim = OptimSpec(lr=lr, momentum=0.9, weight_decay=wd, saliency=True)
  state = init_state(variables, optim())
  state = state._replace(opt_state=set_saliency_mask(state.opt_state, mask))
  x, y = task.forget_x[:16], task.forget_y[:16]
  w = np.ones(16, np.float32)
  base_key = jax.random.key(3)
  step = compiled_train_step(task.objective(losses.random_label_cross_entropy), optim)
  new_state, _ = step(state, x, y, w, base_key)

  key = jax.random.fold_in(base_key, 0)
  fake = losses.random_labels(key, y, task.num_classes)

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return losses.cross_entropy(logits, fake).mean()

  grads = jax.grad(loss)(variables['params'])
  expected = jax.tree.map(lambda p, g, m: np.where(m > 0, p - lr * (g * m + wd * p), p),
                          variables['params'], grads, mask)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state.params, expected)


def _reference_sfron(task, mask, *, lr, wd, momentum, iterations, every, alpha0, clip, lam,
                     batch_size):
  """SFR-on's reference loop (``unlearn/sfron.py``) written out by hand: PyTorch SGD with
  coupled weight decay and one momentum buffer; per iteration t the learning rate and the
  forget weight are cosine(t); a forget step (adaptive loss x alpha_t, grad *= mask,
  clip_grad_norm) every ``every``-th iteration, then a retain CE step."""
  model = task.model
  params, stats = task.variables['params'], task.variables['batch_stats']
  buf = jax.tree.map(np.zeros_like, params)
  cosine = lambda v, t: v * (1 + np.cos(np.pi * t / iterations)) / 2

  def loss_fn(p, stats, x, y, w, adaptive):
    logits, new = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                              mutable=['batch_stats'])
    ce = losses.cross_entropy(logits, y)
    if adaptive:
      c = jax.lax.stop_gradient(w / (ce ** lam + 1e-15))
      return -(c / c.sum() * ce).sum(), new['batch_stats']
    return (w * ce).sum() / w.sum(), new['batch_stats']

  def sgd(params, buf, g, lr_t):
    d = jax.tree.map(lambda g, p: g + wd * p, g, params)
    buf = jax.tree.map(lambda b, d: momentum * b + d, buf, d)
    return jax.tree.map(lambda p, b: p - lr_t * b, params, buf), buf

  forget_iter = cycle_batches(len(task.forget_y), batch_size, task.seed * 1000 + 1)
  retain_iter = cycle_batches(len(task.retain_y), batch_size, task.seed * 1000)
  for t in range(iterations):
    lr_t = cosine(lr, t)
    r_idx, r_w = next(retain_iter)
    if t % every == 0:
      idx, w = next(forget_iter)
      g, stats = jax.grad(loss_fn, has_aux=True)(params, stats, task.forget_x[idx],
                                                 task.forget_y[idx], w, True)
      g = jax.tree.map(lambda g, m: cosine(alpha0, t) * g * m, g, mask)
      norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g)))
      g = jax.tree.map(lambda g: g * min(1.0, clip / (norm + 1e-6)), g)
      params, buf = sgd(params, buf, g, lr_t)
    g, stats = jax.grad(loss_fn, has_aux=True)(params, stats, task.retain_x[r_idx],
                                               task.retain_y[r_idx], r_w, False)
    params, buf = sgd(params, buf, g, lr_t)
  return params


def test_fast_slow_loop_equals_hand_written_sfron_reference(task):
  """The composed chains (scale_by_schedule, mask, clip, shared SGD through ``hold`` and
  ``fast_slow_schedule``) reproduce SFR-on's reference algorithm update for update."""
  mask = sfron_mask(task.statistic(losses.cross_entropy), task.variables, task.forget_x,
                    task.forget_y, task.retain_x, task.retain_y, 1.0, 16)
  kw = dict(lr=0.05, wd=5e-4, momentum=0.9, iterations=7, every=3, alpha0=25.0, clip=0.5,
            lam=0.5, batch_size=16)
  expected = _reference_sfron(task, mask, **kw)
  optim = OptimSpec(lr=kw['lr'], momentum=kw['momentum'], weight_decay=kw['wd'],
                    schedule='cosine', every=kw['every'], forget_weight=kw['alpha0'],
                    forget_schedule='cosine', forget_clip_norm=kw['clip'], saliency=True)
  seen = []
  out, history = fit_fast_slow(
      task.variables, task.forget_phase(losses.AdaptiveGradientAscent(kw['lam'])),
      task.retain_phase(losses.cross_entropy), iterations=kw['iterations'], optim=optim,
      batch_size=16, seed=task.seed, progress=False, mask=mask,
      callback=lambda n, v: seen.append(n), callback_every=4)
  assert len(history['forget']) == 3 and len(history['retain']) == 7
  assert seen == [4, 8, 10]  # 3 forget + 7 retain updates
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               out['params'], expected)


def test_sfron_mask_is_fisher_ratio_and_hvp_variant_runs(task):
  mask = sfron_mask(task.statistic(losses.cross_entropy), task.variables, task.forget_x,
                    task.forget_y, task.retain_x, task.retain_y, 1.0, 16)
  frac = float(np.mean(np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])))
  assert 0 < frac < 1
  hp = resolve_hparams('sfron_hvp', {'iterations': '3', 'solver_iters': '2'})
  out = get_method('sfron_hvp').run(task, hp)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out['params']))


def test_lur_step_follows_the_look_ahead_gradient(task):
  """One compiled LUR joint step moves params by -lr times the meta-objective's jax.grad
  (SGD without momentum or weight decay; BatchNorm statistics of the step's start)."""
  from jaxunlearn.step import compiled_forget_retain_step
  model, variables, lr, eta = task.model, task.variables, 0.05, 0.1
  optim = OptimSpec(lr=lr, momentum=0.0, weight_decay=0.0, forget_weight=1.0,
                      lookahead_lr=eta, lookahead_order='second')
  state = init_state(variables, optim())
  w = np.ones(8, np.float32)
  xf, yf, xr, yr = task.forget_x[:8], task.forget_y[:8], task.retain_x[:8], task.retain_y[:8]
  step = compiled_forget_retain_step(task.objective(losses.gradient_ascent),
                                     task.objective(losses.cross_entropy), optim)
  new_state, metrics = step(state, (xf, yf, w), (xr, yr, w), jax.random.key(0))

  def loss(params, x, y, fn):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return fn(logits, y).mean()

  retain = lambda p: loss(p, xr, yr, losses.cross_entropy)
  forget = lambda p: loss(p, xf, yf, losses.gradient_ascent)
  shift = lambda p: jax.tree.map(lambda a, g: a - eta * g, p, jax.grad(retain)(p))
  meta = jax.grad(lambda p: retain(p) + forget(shift(p)))(variables['params'])
  expected = jax.tree.map(lambda p, g: p - lr * g, variables['params'], meta)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               new_state.params, expected)
  # The step skips the forget gradient at the params (LUR never uses it): no forget loss or
  # cosine in the metrics, and BatchNorm's running statistics see the retain batch only.
  assert not optim.forget_grads_at_params
  assert set(metrics) == {'loss', 'accuracy', 'skipped', 'nonfinite'}
  _, stats = model.apply(variables, xr, train=True, mutable=['batch_stats'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state.model_state['batch_stats'], stats['batch_stats'])


def test_hyperparameters_are_typed_per_method():
  """Each method's hyperparameters are its own frozen dataclass: values cast to the field's
  type (strings from --set, ints for floats), wrong types and ranges rejected with the
  method's name, every field documented; a dict and --set strings resolve alike."""
  import dataclasses

  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  from jaxunlearn.hparams import Hyperparameters
  classes = [m.hparams for r in (METHODS, GENERATION_METHODS) for m in r.values()]
  assert len(set(classes)) == len(classes)  # no class shared between methods
  for registry in (METHODS, GENERATION_METHODS):
    for name, method in registry.items():
      assert issubclass(method.hparams, Hyperparameters) and method.hparams.method == name
      for field, _, meaning in method.hparams.describe():
        assert meaning, f'{name}.{field} has no meaning or check'
  hp = resolve_hparams('sfron', {'iterations': 7, 'forget_weight': 3})
  assert hp.iterations == 7 and isinstance(hp.forget_weight, float)
  assert hp == resolve_hparams('sfron', {'iterations': '7', 'forget_weight': '3'})
  with pytest.raises(dataclasses.FrozenInstanceError):
    hp.lr = 1.0
  with pytest.raises(ValueError, match='sfron.iterations must be a int, got 2.5'):
    resolve_hparams('sfron', {'iterations': 2.5})
  with pytest.raises(ValueError, match='rl.exclude_true_label must be a bool'):
    resolve_hparams('rl', {'exclude_true_label': 1})
  with pytest.raises(ValueError, match="sa.steps must be >= 1"):
    resolve_hparams('sa', {'steps': 0}, GENERATION_METHODS)
  with pytest.raises(ValueError, match=r"salun.cond_drop_prob must be in \[0, 1\)"):
    resolve_hparams('salun', {'cond_drop_prob': 1.0}, GENERATION_METHODS)
  # One recipe for the original and Retrain, checked the same way.
  from jaxunlearn.train import TrainConfig
  assert isinstance(resolve_hparams('retrain'), TrainConfig)
  assert resolve_hparams('retrain').to_dict() == TrainConfig().to_dict()
  with pytest.raises(ValueError, match='train.lr must be > 0'):
    TrainConfig(lr=0.0)


# Names whose meaning is one idea worded for each method (passes over its data, its peak or
# constant learning rate, the damping of its curvature matrix, ...).
_ONE_IDEA_IN_OTHER_WORDS = {'batch_size', 'epochs', 'lr', 'steps', 'forget_loss', 'damping',
                            'cond_drop_prob'}


def test_one_hyperparameter_name_means_one_thing():
  """Across both tasks' methods a name has one meaning (``alpha`` was five weights: the
  retain CE's, the forget step's, the l1 penalty's, the Newton step's size and SCRUB's KL
  weight); the references' names are refused with the name they have here."""
  import collections

  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  meanings = collections.defaultdict(set)
  for registry in (METHODS, GENERATION_METHODS):
    for name, method in registry.items():
      for field, _, meaning in method.hparams.describe():
        meanings[field].add(meaning.split(';')[0].split(' (')[0])  # the detail aside
  assert 'alpha' not in meanings and 'remain_alpha' not in meanings
  two = {f: m for f, m in meanings.items() if len(m) > 1 and f not in _ONE_IDEA_IN_OTHER_WORDS}
  assert not two, f'a name means two things: {two}'
  with pytest.raises(ValueError, match="salun_joint.alpha is called 'retain_weight' here"):
    resolve_hparams('salun_joint', {'alpha': 2.0})
  with pytest.raises(ValueError, match="scrub.gamma is called 'ce_weight' here"):
    resolve_hparams('scrub', {'gamma': 0.5})
  with pytest.raises(ValueError, match="sfron_hvp.clip_norm is called 'forget_clip_norm'"):
    resolve_hparams('sfron_hvp', {'clip_norm': 1.0})
  with pytest.raises(ValueError, match="sfron.remain_alpha is called 'retain_weight'"):
    resolve_hparams('sfron', {'remain_alpha': 1.0}, GENERATION_METHODS)
  assert resolve_hparams('sfron', {'clip_norm': 2.0}, GENERATION_METHODS).clip_norm == 2.0


def test_run_takes_hyperparameters_or_overrides(task):
  """``Method.run`` takes the method's dataclass or a dict of overrides, not another
  method's class."""
  ga = get_method('ga')
  a = ga.run(task, {'epochs': 1})
  b = ga.run(task, resolve_hparams('ga', {'epochs': 1}))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with pytest.raises(ValueError, match="method 'ga' has no hyperparameter 'exclude_true_label'"):
    ga.run(task, resolve_hparams('salun').to_dict())
  with pytest.raises(TypeError, match="method 'ga' takes GA hyperparameters, got SalUn"):
    ga.run(task, resolve_hparams('salun'))
