import jax
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.data import make_split
from jaxunlearn.methods import METHODS, UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.step import predict
from jaxunlearn.train import TrainConfig, train_classifier

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


def test_registry_has_foundation_methods():
  assert {'retrain', 'ft', 'ga', 'rl'} <= set(METHODS)
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


@pytest.mark.parametrize('name', ['retrain', 'ft', 'ga', 'rl'])
def test_every_method_returns_variables_of_the_same_structure(task, name):
  hp = resolve_hparams(name, FAST)
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
