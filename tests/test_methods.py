import jax
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.data import make_split
from jaxunlearn.methods import METHODS, UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.saliency import salun_mask
from jaxunlearn.step import compiled_train_step, init_state, predict
from jaxunlearn.train import OptimConfig, TrainConfig, train_classifier
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
       'scrub', 'bad_teacher']


def test_registry_has_every_method():
  assert set(ALL) <= set(METHODS)
  with pytest.raises(ValueError, match='unknown method .*available: .*ft'):
    get_method('nope')


def test_resolve_hparams_casts_and_rejects_unknown_keys():
  hp = resolve_hparams('rl', {'lr': '0.02', 'epochs': '3', 'exclude_true_label': 'false'})
  assert hp['lr'] == 0.02 and hp['epochs'] == 3 and hp['exclude_true_label'] is False
  assert resolve_hparams('ft')['lr'] == 0.01  # reference default
  with pytest.raises(ValueError, match="has no hyperparameter 'lrr'.*lr"):
    resolve_hparams('ft', {'lrr': '1'})
  with pytest.raises(ValueError, match='ft.epochs must be a int'):
    resolve_hparams('ft', {'epochs': 'ten'})


@pytest.mark.parametrize('name', ALL)
def test_every_method_returns_variables_of_the_same_structure(task, name):
  hp = resolve_hparams(name, FAST if 'epochs' in METHODS[name].defaults else {})
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
  mask = salun_mask(task.model, task.variables, task.forget_x, task.forget_y, hp['keep'],
                    hp['batch_size'])
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
  mask = salun_mask(model, variables, task.forget_x, task.forget_y, 0.5)
  optim = OptimConfig(lr=lr, momentum=0.9, weight_decay=wd, saliency=True)
  state = init_state(variables, optim())
  state = state._replace(opt_state=set_saliency_mask(state.opt_state, mask))
  x, y = task.forget_x[:16], task.forget_y[:16]
  w = np.ones(16, np.float32)
  base_key = jax.random.key(3)
  step = compiled_train_step(model, losses.random_label_cross_entropy, optim)
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
