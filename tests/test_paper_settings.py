"""The paper scripts run the references' hyperparameters: the table of
:mod:`jaxunlearn.paper_settings`, the scripts' ``--print-hparams`` and docs/paper-settings.md
agree, and the settings the table needs (a step schedule, GA's clip, RL's mixed pass) do what
the reference code does."""

import contextlib
import dataclasses
import importlib
import io
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxunlearn import losses, paper_settings
from jaxunlearn.methods import METHODS, UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import ResNet
from jaxunlearn.train import TrainConfig, init_variables

ROOT = Path(__file__).parent.parent
CLASSIFICATION = ['cifar10_random10', 'cifar10_classwise', 'cifar100_random10']
GENERATION = ['ddpm_cifar10_class', 'dit_imagenet_class207']
NOT_METHODS = {'train', 'retrain', 'ddpm', 'classifier', 'sampling'}


def printed(script: str, *argv) -> dict:
  """What ``experiments/<script>.py --print-hparams`` prints, parsed (in this process)."""
  sys.path.insert(0, str(ROOT / 'experiments'))
  try:
    module = importlib.import_module(script)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      module.main(['--print-hparams', *argv])
  finally:
    sys.path.remove(str(ROOT / 'experiments'))
  return json.loads(out.getvalue())


@pytest.mark.parametrize('script', CLASSIFICATION + GENERATION)
def test_scripts_resolve_to_the_table(script):
  """Every value of the table is what the script runs, and every hyperparameter of every
  method the script runs has a row (a value of its own, with its source); the generation
  scripts' training, classifier and evaluation sampler too."""
  table = paper_settings.SETTINGS[script]
  resolved = printed(script)
  module = importlib.import_module(script)
  runs = module.CONFIG.methods if hasattr(module, 'CONFIG') else module.HPARAMS
  assert set(resolved) - NOT_METHODS == set(runs) - {'retrain'}
  assert set(resolved) <= set(table), set(resolved) - set(table)
  for method, values in resolved.items():
    assert set(values) == set(table[method]), (method, set(values) ^ set(table[method]))
    for name, value in values.items():
      want = table[method][name].value
      assert value == (list(want) if isinstance(want, tuple) else want), (method, name)


def test_print_hparams_shows_the_reference_values_and_takes_a_subset():
  c10 = printed('cifar10_random10')
  assert c10['sfron']['iterations'] == 1500 and c10['sfron']['batch_size'] == 128
  assert {k: c10['salun'][k] for k in ('batch_size', 'lr', 'epochs', 'keep')} == {
      'batch_size': 256, 'lr': 0.013, 'epochs': 10, 'keep': 0.5}
  assert c10['ga']['lr'] == 1e-4 and c10['train']['drop_epochs'] == [91, 136]
  c100 = printed('cifar100_random10', '--methods', 'salun,ga')
  assert set(c100) == {'train', 'retrain', 'salun', 'ga'}
  assert c100['salun']['passes'] == 'mixed' and c10['salun']['passes'] == 'alternate'
  dit = printed('dit_imagenet_class207')
  assert dit['sfron']['iterations'] == 600 and dit['salun']['batch_size'] == 32
  assert dit['sfron']['forget_loss'] == 'ga' and not dit['sfron']['retain_clip']
  ddpm = printed('ddpm_cifar10_class')
  assert ddpm['ddpm']['steps'] == 800_000 and ddpm['ddpm']['warmup'] == 0
  assert ddpm['sa']['steps'] == 20_000 and ddpm['salun']['lr'] == 1e-4
  assert ddpm['sampling'] == {'sample_steps': 1000, 'sample_eta': 1.0, 'sample_clip': False,
                              'guidance': 3.0}
  fast = printed('ddpm_cifar10_class', '--sampling', 'fast')
  assert fast['sampling']['sample_steps'] == 50 and fast['sfron'] == ddpm['sfron']


def test_docs_show_the_table():
  doc = (ROOT / 'docs' / 'paper-settings.md').read_text()
  assert paper_settings.markdown() in doc, ('docs/paper-settings.md is stale: regenerate its '
                                            'table with python -m jaxunlearn.paper_settings')


def test_a_value_names_its_source():
  with pytest.raises(ValueError, match="'repo:path:line'"):
    paper_settings.Ref(1, 'Classification/arg_parser.py:69')
  with pytest.raises(ValueError, match='needs a note'):
    paper_settings.Ref(1, 'ours')
  with pytest.raises(ValueError, match='unknown paper setting'):
    paper_settings.overrides('cifar10_random')


def test_step_schedule_drops_by_ten_on_the_first_step_of_each_drop_epoch():
  """PyTorch's MultiStepLR(milestones=[3, 5], gamma=0.1) stepped per epoch: epochs 0-2 at
  lr, 3-4 at lr/10, 5 on at lr/100."""
  cfg = TrainConfig.resolve({'epochs': 6, 'lr': 0.5, 'schedule': 'step', 'drop_epochs': '3,5'})
  steps_per_epoch = 7
  lr = cfg.optim().over(6 * steps_per_epoch).learning_rate()
  got = [float(lr(s)) for s in range(6 * steps_per_epoch)]
  want = [0.5 * 0.1 ** sum(e >= m for m in (3, 5)) for e in range(6)
          for _ in range(steps_per_epoch)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for bad, match in [({'schedule': 'step'}, 'needs train.drop_epochs'),
                     ({'drop_epochs': '3'}, 'only it takes them'),
                     ({'schedule': 'step', 'drop_epochs': '30'}, 'beyond its 10 epochs'),
                     ({'schedule': 'step', 'drop_epochs': '3,x'}, 'comma-separated integers')]:
    with pytest.raises(ValueError, match=match):
      TrainConfig.resolve(bad)


def _task(n_forget=8, n_retain=24, seed=0):
  rng = np.random.default_rng(seed)
  model = ResNet(num_classes=4, width=4, stage_sizes=(1,))
  x = rng.normal(size=(n_forget + n_retain, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 4, n_forget + n_retain).astype(np.int32)
  return UnlearnTask(model, init_variables(model, (8, 8, 3), 0), x[:n_forget], y[:n_forget],
                     x[n_forget:], y[n_forget:], 4, seed, progress=False)


def test_ga_clips_each_gradient_before_sgd():
  """One plain-SGD step (no momentum, no weight decay) of GA with ``clip_norm`` moves the
  weights by exactly lr * clip_norm when the gradient is longer than the clip."""
  task = _task()
  hp = dict(epochs=1, batch_size=8, lr=0.1, momentum=0.0, weight_decay=0.0)
  free = get_method('ga').run(task, hp)
  clipped = get_method('ga').run(task, {**hp, 'clip_norm': 1e-3})
  norm = lambda v: float(np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in
                                     zip(jax.tree.leaves(v['params']),
                                         jax.tree.leaves(task.variables['params'])))))
  assert norm(free) > 0.1 * 1e-3 * 10  # the gradient is far longer than the clip
  np.testing.assert_allclose(norm(clipped), 0.1 * 1e-3, rtol=1e-4)


@pytest.mark.slow
def test_mixed_random_labels_loss_and_rl_mixed_pass():
  """``MixedRandomLabels``: random labels (the same draw as RL's) on forget rows, the true
  labels on retain rows; RL with ``passes='mixed'`` takes one shuffled pass over both sets
  (ceil((N_f + N_r) / B) steps per epoch, not a pass over each)."""
  logits = np.asarray(jax.random.normal(jax.random.key(0), (6, 5)))
  labels = np.array([0, 1, 2, 3, 4, 0], np.int32)
  forget = np.array([1, 1, 1, 0, 0, 0], np.int32)
  key = jax.random.key(3)
  got = losses.MixedRandomLabels()(logits, {'label': labels, 'forget': forget}, key)
  rl = losses.random_label_cross_entropy(logits, labels, key)
  ce = losses.cross_entropy(logits, labels)
  np.testing.assert_allclose(got, np.where(forget > 0, rl, ce), rtol=1e-6)
  assert not np.allclose(got[:3], ce[:3])

  task = _task()
  calls = []
  counting = dataclasses.replace(task, callback=lambda steps, v: calls.append(steps),
                                 callback_every=1)
  get_method('rl').run(counting, {'epochs': 1, 'batch_size': 8, 'passes': 'mixed'})
  assert calls[-1] == 4  # 32 examples / 8, one pass
  calls.clear()
  get_method('rl').run(counting, {'epochs': 1, 'batch_size': 8})
  assert calls[-1] == 4  # 8 / 8 forget, then 24 / 8 retain: the same count, other order
  mixed = get_method('salun').run(task, {'epochs': 1, 'batch_size': 8, 'passes': 'mixed'})
  alternate = get_method('salun').run(task, {'epochs': 1, 'batch_size': 8})
  assert not np.allclose(jax.tree.leaves(mixed['params'])[0],
                         jax.tree.leaves(alternate['params'])[0])


def test_only_random_label_methods_take_passes():
  assert 'passes' in METHODS['rl'].defaults and 'passes' in METHODS['salun'].defaults
  for name in ('lur', 'salun_joint'):
    with pytest.raises(ValueError, match="no hyperparameter 'passes'"):
      resolve_hparams(name, {'passes': 'mixed'})


def test_the_dit_recipe_of_the_cli_is_the_tables():
  """``jaxunlearn run --model dit`` applies ``DIT_RECIPE`` to ``sfron``; it is the DiT
  script's row for row (only the batch, ours in the script, may differ)."""
  from jaxunlearn.diffusion.methods import DIT_RECIPE
  table = paper_settings.overrides('dit_imagenet_class207')['sfron']
  for name, value in DIT_RECIPE['sfron'].items():
    assert table[name] == value, (name, table[name], value)
