"""Forget/retain gradient alignment (the quantity LUR improves) and its logging in runs."""

import json

import jax
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.evaluate import GradientAlignment
from jaxunlearn.models import make_model
from jaxunlearn.train import init_variables


@pytest.fixture
def setup(toy):
  model = make_model('resnet1', toy.num_classes, 4)
  return model, init_variables(model, toy.x_train.shape[1:], 0), toy


def _flat_grad(model, variables, x, y, loss_fn):
  model_state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(p):
    logits, _ = model.apply({'params': p, **model_state}, x, train=True,
                            mutable=list(model_state))
    return loss_fn(logits, y).mean()

  return np.concatenate([np.ravel(g) for g in
                         jax.tree.leaves(jax.grad(loss)(variables['params']))]).astype(np.float64)


def test_cosine_matches_flattened_gradients_by_hand(setup):
  model, variables, ds = setup
  fx, fy, rx, ry = ds.x_train[:20], ds.y_train[:20], ds.x_train[20:], ds.y_train[20:]
  probe = GradientAlignment(model, fx, fy, rx, ry, batch_size=64)  # bigger than both sets
  gf = _flat_grad(model, variables, fx, fy, losses.expected_random_label_cross_entropy)
  gr = _flat_grad(model, variables, rx, ry, losses.cross_entropy)
  expected = gf @ gr / np.linalg.norm(gf) / np.linalg.norm(gr)
  np.testing.assert_allclose(probe.cosine(variables), expected, atol=1e-5)


def test_same_loss_on_same_batch_is_aligned_and_ascent_is_opposed(setup):
  model, variables, ds = setup
  x, y = ds.x_train, ds.y_train
  same = GradientAlignment(model, x, y, x, y, forget_loss=losses.cross_entropy, seed=3)
  ascent = GradientAlignment(model, x, y, x, y, forget_loss=losses.gradient_ascent, seed=3)
  np.testing.assert_allclose(same.cosine(variables), 1.0, atol=1e-5)
  np.testing.assert_allclose(ascent.cosine(variables), -1.0, atol=1e-5)


def test_one_gradient_program_equals_two(setup):
  """The probe's one program (a flag picks the loss) against the two-gradient program it
  keeps for losses that weight their examples: lam=0 is plain gradient ascent."""
  model, variables, ds = setup
  x, y = ds.x_train, ds.y_train
  fx, fy, rx, ry = x[:30], y[:30], x[30:], y[30:]
  one = GradientAlignment(model, fx, fy, rx, ry, forget_loss=losses.gradient_ascent, seed=1)
  two = GradientAlignment(model, fx, fy, rx, ry, seed=1,
                          forget_loss=losses.AdaptiveGradientAscent(lam=0.0))
  assert abs(one.cosine(variables)) > 0.05  # a cosine that tells the losses apart
  np.testing.assert_allclose(one.cosine(variables), two.cosine(variables), rtol=1e-5)


def test_callback_records_steps_and_time(setup):
  model, variables, ds = setup
  probe = GradientAlignment(model, ds.x_train[:20], ds.y_train[:20], ds.x_train, ds.y_train)
  probe(0, variables)
  probe(5, variables)
  assert probe.steps == [0, 5] and probe.cosines[0] == probe.cosines[1]
  assert probe.seconds > 0
  with pytest.raises(ValueError, match='non-empty'):
    GradientAlignment(model, ds.x_train[:0], ds.y_train[:0], ds.x_train, ds.y_train)


@pytest.mark.slow
def test_run_logs_alignment_for_lur_salun_and_rl(tmp_path):
  from jaxunlearn.cli import main
  out = tmp_path / 'out'
  argv = ['run', '--scenario', 'class:3', '--methods', 'retrain,rl,salun,lur,iu', '--out',
          str(out), '--cache-dir', str(tmp_path / 'cache'), '--alignment-every', '2',
          '--model', 'resnet1', '--width', '4', '--image-size', '8', '--quiet', '--parallel', 'none',
          '--set', 'train.epochs=2', '--set', 'retrain.epochs=2', '--set', 'rl.epochs=1',
          '--set', 'salun.epochs=1', '--set', 'lur.epochs=1', '--set', 'iu.num_samples=16']
  assert main(argv) == 0
  results = json.loads((out / 'results.json').read_text())
  # class 3 of digits' 1437 training images: ~145 forget (2 batches), ~1290 retain (11).
  expected_updates = {'rl': 13, 'salun': 13, 'lur': 11}
  for name, updates in expected_updates.items():
    steps, cosines = results['alignment'][name]['steps'][0], results['alignment'][name]['cosine'][0]
    assert steps[0] == 0 and steps[-1] == updates and len(steps) == len(cosines)
    assert all(-1 <= c <= 1 for c in cosines)
    np.testing.assert_allclose(results['methods'][name]['grad_cosine']['mean'],
                               np.mean(cosines[1:]), rtol=1e-6)
  assert 'iu' not in results['alignment']  # one Newton step: no updates to follow
  assert 'grad_cosine' not in results['methods']['iu']
  assert (out / 'alignment.png').stat().st_size > 10_000


def test_boundary_expanding_is_probed_on_the_task_model(setup):
  """BE trains a head widened by a shadow class; the probe (built for the task's C-class
  model, as `jaxunlearn run` builds it) sees the widened weights cut back to C classes, and
  a loop checkpoint still finds the probe's record."""
  from jaxunlearn.methods import UnlearnTask, _WithoutShadowClass, get_method, resolve_hparams
  model, variables, ds = setup
  fx, fy, rx, ry = ds.x_train[:20], ds.y_train[:20], ds.x_train[20:], ds.y_train[20:]
  probe = GradientAlignment(model, fx, fy, rx, ry)
  task = UnlearnTask(model, variables, fx, fy, rx, ry, ds.num_classes, seed=0, progress=False,
                     callback=probe, callback_every=1)
  out = get_method('be').run(task, resolve_hparams('be', {'epochs': 2, 'batch_size': 16}))
  assert out['params']['head']['kernel'].shape[-1] == ds.num_classes
  assert probe.steps == [1, 2, 3, 4] and all(np.isfinite(probe.cosines))
  wrapped = _WithoutShadowClass(probe, ds.num_classes)  # what BE hands the loop
  assert wrapped.state_dict() == probe.state_dict()
  import copy
  assert copy.deepcopy(wrapped).state_dict() == probe.state_dict()
