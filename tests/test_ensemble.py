"""Ensembles: N models trained and unlearned side by side by jax.vmap over seeds, each the
model it would be alone; and the many-model evaluation job on them."""

import json

import jax
import numpy as np
import pytest

from jaxunlearn import methods as methods_lib
from jaxunlearn.cli import main
from jaxunlearn.data import load_digits, make_split
from jaxunlearn.models import make_model
from jaxunlearn.parallel import Parallel
from jaxunlearn.step import predict
from jaxunlearn.strong_eval import StrongConfig, run_strong
from jaxunlearn.train import TrainConfig, train_classifier

SEEDS = (3, 5)


@pytest.fixture(scope='module')
def setup():
  ds = load_digits(8)
  model = make_model('resnet18', ds.num_classes, 4)
  split = make_split(ds, 'random:10', 0)
  # 3 steps per epoch: few enough that float rounding (vmapped convolutions sum in another
  # order) has not grown; training is chaotic and would amplify it over many steps.
  x, y = ds.x_train[:192], ds.y_train[:192]
  cfg = TrainConfig(epochs=1, batch_size=64)
  singles = [train_classifier(model, x, y, cfg, s, progress=False) for s in SEEDS]
  stacked = train_classifier(model, x, y, cfg, SEEDS, parallel=Parallel.ensemble(2),
                             progress=False)
  return ds, model, split, singles, stacked


def _assert_models_equal(stacked, singles, rtol=1e-4):
  for i, single in enumerate(singles):
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(single)):
      np.testing.assert_allclose(np.asarray(a)[i], b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.slow  # the fixture trains 3 models twice: ~50 s on 2 cores
def test_ensemble_training_equals_one_model_at_a_time(setup):
  _, _, _, singles, stacked = setup
  # Trained from the same initialisation the two differ by rounding amplified over 3 steps,
  # which depends on the CPU's vector units: measured up to 3e-4 relative (L2 per leaf) on
  # an AMD EPYC without AVX-512, where a 4-entry BatchNorm leaf missed 1e-4 elementwise. A
  # wrong seed, batch order or shared BatchNorm state is an O(1) difference.
  for i, single in enumerate(singles):
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(single)):
      a = np.asarray(a)[i]
      assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b) + 1e-7, (a, b)
  # ... and the seeds matter: the two models differ.
  assert not np.allclose(jax.tree.leaves(singles[0])[0], jax.tree.leaves(singles[1])[0])


@pytest.mark.slow  # four methods compiled twice each: ~130 s on 2 cores
@pytest.mark.parametrize('name,hp', [
    ('salun', {'epochs': 1, 'batch_size': 64}),            # per-model masks, then fit
    ('sfron', {'iterations': 3, 'batch_size': 64}),         # the fast-slow loop
    ('lur', {'epochs': 1, 'batch_size': 64}),               # joint look-ahead steps
    ('ga', {'epochs': 1, 'batch_size': 64})])               # the sign in each model's state
def test_ensemble_unlearning_equals_one_model_at_a_time(setup, name, hp):
  ds, model, split, singles, stacked = setup
  f, r = split.forget[:40], split.retain[:128]
  args = (ds.x_train[f], ds.y_train[f], ds.x_train[r], ds.y_train[r], ds.num_classes)
  method = methods_lib.get_method(name)
  # Each model alone starts from its slice of the ensemble, bit for bit: the trained models
  # differ from the ensemble's by float rounding (~1e-6), which a saliency threshold (SFR-on's
  # F_f / F_r >= gamma) can turn into a flipped mask entry and an O(lr) difference.
  starts = [jax.tree.map(lambda a, i=i: np.asarray(a)[i], stacked) for i in range(len(SEEDS))]
  alone = [method.run(methods_lib.UnlearnTask(model, v, *args, seed=s, progress=False), hp)
           for v, s in zip(starts, SEEDS)]
  together = method.run(methods_lib.UnlearnTask(model, stacked, *args, seed=SEEDS,
                                                progress=False,
                                                parallel=Parallel.ensemble(2)), hp)
  _assert_models_equal(together, alone)


@pytest.mark.slow  # shares the fixture above
def test_ensemble_predict_and_seed_checks(setup):
  ds, model, _, singles, stacked = setup
  logits = predict(model, stacked, ds.x_test[:70], batch_size=32,
                   parallel=Parallel.ensemble(2))
  assert logits.shape == (2, 70, 10)
  np.testing.assert_allclose(logits[1], predict(model, singles[1], ds.x_test[:70]),
                             rtol=1e-4, atol=1e-4)
  cfg = TrainConfig(epochs=1, batch_size=64)
  with pytest.raises(ValueError, match='Parallel.ensemble'):
    train_classifier(model, ds.x_train[:64], ds.y_train[:64], cfg, (1, 2), progress=False)
  with pytest.raises(ValueError, match='needs 3 seeds'):
    train_classifier(model, ds.x_train[:64], ds.y_train[:64], cfg, (1, 2),
                     parallel=Parallel.ensemble(3), progress=False)
  with pytest.raises(ValueError, match='models >= 1'):
    Parallel('vmap')


@pytest.mark.slow  # ~50 s
def test_strong_job_writes_scores_for_ensemble_and_loop_methods(tmp_path):
  config = StrongConfig(
      width=4, models=3, chunk=0, methods=('original', 'ft', 'iu'), cache_dir=None,
      progress=False,
      overrides={'train': {'epochs': 1}, 'retrain': {'epochs': 1}, 'ft': {'epochs': 1},
                 'iu': {'num_samples': 32}})
  results = run_strong(config, tmp_path)
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert set(saved['methods']) == {'retrain', 'original', 'ft', 'iu'}
  assert saved['methods']['ft']['ensemble'] and not saved['methods']['iu']['ensemble']
  assert saved['methods']['original']['rte_s_per_model'] == 0
  for name in ('original', 'ft', 'iu'):
    row = results['methods'][name]
    assert 0 <= row['forget_quality'] <= 1 and 0 <= row['ulira_auc'] <= 1
    assert len(saved['per_example'][name]['epsilon']) == saved['forget_size']
  assert (tmp_path / 'strong.png').stat().st_size > 10_000


def test_cli_eval_strong_refuses_bad_settings(capsys):
  assert main(['eval-strong', '--models', '2']) == 2
  assert '--models must be >= 3' in capsys.readouterr().err
  assert main(['eval-strong', '--methods', 'ft,sfronn']) == 2
  assert 'sfronn' in capsys.readouterr().err
