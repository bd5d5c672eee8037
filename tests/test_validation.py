"""Bad input is a clear error before any compute; properties of splits and masks."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import synthetic_dataset
from jaxunlearn.data import Dataset, make_split
from jaxunlearn.experiment import ExperimentConfig, run_experiment
from jaxunlearn.methods import UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.saliency import fisher_ratio_mask, topk_gradient_mask
from jaxunlearn.train import init_variables

TOY = synthetic_dataset(n_train=40, n_test=20, classes=4)

scenarios = st.one_of(
    st.integers(-3, 8).map(lambda k: f'class:{k}'),
    st.floats(-20, 120, allow_nan=False).map(lambda p: f'random:{p}'),
    st.sampled_from(['class:1.5', 'class:', 'random:', 'random:abc', 'klass:1', '', ':',
                     'random:1e-9', 'random:99.99', 'class:nan', 'class:inf', 'random:nan',
                     'random:inf']),
    st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(spec=scenarios, seed=st.integers(0, 2**31 - 1))
def test_any_split_spec_is_a_valid_split_or_a_clear_error(spec, seed):
  try:
    split = make_split(TOY, spec, seed)
  except ValueError as e:
    assert 'scenario' in str(e) or 'set is empty' in str(e), e
    return
  n = len(TOY.y_train)
  forget, retain, test = split.forget, split.retain, split.test
  assert len(forget) and len(retain) and len(test)
  assert not set(forget) & set(retain)
  np.testing.assert_array_equal(np.sort(np.concatenate([forget, retain])), np.arange(n))
  kind, value = spec.split(':')
  if kind == 'class':
    k = int(float(value))
    np.testing.assert_array_equal(forget, np.flatnonzero(TOY.y_train == k))
    assert not np.any(TOY.y_test[test] == k)
  else:
    assert len(forget) == round(float(value) / 100 * n)
    np.testing.assert_array_equal(test, np.arange(len(TOY.y_test)))
  again = make_split(TOY, spec, seed)  # a pure function of (dataset, scenario, seed)
  np.testing.assert_array_equal(again.forget, forget)


keeps = st.one_of(st.floats(-1, 2),
                  st.sampled_from([0.0, 1.0, 1e-9, -0.0, math.nan, math.inf]))


@settings(max_examples=150, deadline=None)
@given(keep=keeps, seed=st.integers(0, 1000))
def test_any_mask_sparsity_selects_exactly_its_share_or_is_rejected(keep, seed):
  rng = np.random.default_rng(seed)
  grads = {'a': rng.normal(size=(7, 5)).astype(np.float32),
           'b': {'c': rng.normal(size=(11,)).astype(np.float32)}}
  if not 0 < keep <= 1:  # includes NaN
    with pytest.raises(ValueError, match=r'keep fraction must lie in \(0, 1\]'):
      topk_gradient_mask(grads, keep)
    with pytest.raises(ValueError, match=r'salun.keep must be (a fraction in \(0, 1\]|'
                                         r'a finite number)'):
      resolve_hparams('salun', {'keep': keep})
    return
  mask = topk_gradient_mask(grads, keep)
  flat_g = np.abs(np.concatenate([grads['a'].ravel(), grads['b']['c'].ravel()]))
  flat_m = np.concatenate([np.asarray(mask['a']).ravel(), np.asarray(mask['b']['c']).ravel()])
  k = max(1, int(round(keep * flat_g.size)))
  assert set(np.unique(flat_m)) <= {0.0, 1.0} and flat_m.sum() == k
  assert flat_g[flat_m == 1].min() >= flat_g[flat_m == 0].max(initial=-math.inf)


@settings(max_examples=60, deadline=None)
@given(gamma=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_fisher_ratio_mask_selects_the_ratio_above_gamma_or_says_it_selects_nothing(gamma, seed):
  rng = np.random.default_rng(seed)
  f_forget = {'w': rng.exponential(size=(20,)).astype(np.float32)}
  f_remain = {'w': rng.exponential(size=(20,)).astype(np.float32)}
  ratio = f_forget['w'] / (f_remain['w'] + 1e-15)
  if not np.any(ratio >= gamma):
    with pytest.raises(ValueError, match='selects no weight'):
      fisher_ratio_mask(f_forget, f_remain, gamma)
    return
  mask = fisher_ratio_mask(f_forget, f_remain, gamma)
  np.testing.assert_array_equal(np.asarray(mask['w']) == 1, ratio >= gamma)


@pytest.fixture(scope='module')
def parts():
  ds = synthetic_dataset()
  split = make_split(ds, 'class:0')
  model = make_model('resnet1', ds.num_classes, 4)
  variables = init_variables(model, ds.image_shape, 0)
  return (model, variables, ds.x_train[split.forget], ds.y_train[split.forget],
          ds.x_train[split.retain], ds.y_train[split.retain], ds.num_classes)


def _bad(parts, **changes):
  names = ['model', 'variables', 'forget_x', 'forget_y', 'retain_x', 'retain_y', 'num_classes']
  kwargs = dict(zip(names, parts), **changes)
  return kwargs


@pytest.mark.parametrize('change, message', [
    (lambda p: {'forget_x': p[2][:0], 'forget_y': p[3][:0]}, 'forget set is empty'),
    (lambda p: {'retain_x': (p[4] * 50).astype(np.uint8)}, 'retain images have dtype uint8'),
    (lambda p: {'forget_y': p[3].astype(np.float32)}, 'labels have dtype float32'),
    (lambda p: {'forget_y': p[3] + 7}, r'forget labels must lie in 0..2, found 7..7'),
    (lambda p: {'retain_y': p[5] - 2}, r'retain labels must lie in 0..2, found -1..0'),
    (lambda p: {'forget_x': p[2][..., 0]}, r'forget images must be \[N, H, W, C\]'),
    (lambda p: {'forget_y': p[3][:-1]}, r'forget labels have shape \(19,\), expected \(20,\)'),
    (lambda p: {'retain_x': p[4][:, :6, :6]}, 'differ in shape'),
    (lambda p: {'forget_x': np.where(np.arange(20)[:, None, None, None] == 3, np.nan, p[2])},
     'forget images contain NaN'),
])
def test_unlearn_task_rejects_bad_data(parts, change, message):
  with pytest.raises(ValueError, match=message):
    UnlearnTask(**_bad(parts, **change(parts)))


def test_method_run_rejects_duplicates_and_a_model_that_does_not_fit(parts):
  model, variables, fx, fy, rx, ry, c = parts
  leaked = UnlearnTask(model, variables, fx, fy, np.concatenate([rx, fx[4:6]]),
                       np.concatenate([ry, fy[4:6]]), c, progress=False)
  with pytest.raises(ValueError, match=r'2 forget examples also appear in the retain set '
                                       r'\(forget row 4 = retain row 40'):
    get_method('ft').run(leaked, resolve_hparams('ft'))
  rgb = UnlearnTask(model, variables, np.repeat(fx, 3, -1), fy, np.repeat(rx, 3, -1), ry, c,
                    progress=False)
  with pytest.raises(ValueError, match=r'model does not take images of shape \(8, 8, 3\)'):
    get_method('ft').run(rgb, resolve_hparams('ft'))
  wide = UnlearnTask(model, variables, fx, np.zeros_like(fy), rx, np.zeros_like(ry), 5,
                     progress=False)
  with pytest.raises(ValueError, match='model has 3 outputs but the task 5 classes'):
    get_method('ft').run(wide, resolve_hparams('ft'))
  with pytest.raises(ValueError, match="no hyperparameter 'lrr' \\(did you mean 'lr'\\?\\)"):
    get_method('ft').run(leaked, {'lrr': 1.0})


@pytest.mark.parametrize('name, hp, message', [
    ('salun', {'keep': 0.0}, r'salun.keep must be a fraction in \(0, 1\]'),
    ('salun', {'keep': 1.5}, r'salun.keep must be a fraction in \(0, 1\]'),
    ('ft', {'lr': -0.1}, 'ft.lr must be > 0'),
    ('ft', {'batch_size': 0}, 'ft.batch_size must be >= 1'),
    ('sfron', {'every': 0}, 'sfron.every must be >= 1'),
    ('sfron', {'gamma': 0.0}, 'sfron.gamma must be > 0'),
    ('ft', {'momentum': 1.0}, r'ft.momentum must be in \[0, 1\)'),
    ('lur', {'forget_loss': 'kl'}, "lur.forget_loss must be 'rl' or 'ga'"),
    ('ft', {'schedule': 'linear'}, "ft.schedule must be 'constant' or 'cosine'"),
    ('ft', {'lr': float('nan')}, 'ft.lr must be a finite number'),
])
def test_hyperparameters_out_of_range_are_rejected(name, hp, message):
  with pytest.raises(ValueError, match=message):
    resolve_hparams(name, hp)


def test_config_keys_that_do_not_exist_name_the_closest_one():
  with pytest.raises(ValueError, match="the experiment has no setting 'scenaro' \\(did you "
                                       "mean 'scenario'\\?\\)"):
    ExperimentConfig.from_dict({'scenaro': 'class:3'})
  with pytest.raises(ValueError, match="train has no setting 'epoch' \\(did you mean "
                                       "'epochs'\\?\\)"):
    ExperimentConfig.from_dict({'train': {'epoch': 3}})
  config = ExperimentConfig.from_dict({'methods': ['ft'], 'seeds': [1, 2],
                                       'train': {'epochs': 3}})
  assert config.methods == ('ft',) and config.seeds == (1, 2) and config.train.epochs == 3
  with pytest.raises(ValueError, match="unknown method 'slaun' \\(did you mean 'salun'\\?\\)"):
    ExperimentConfig(methods=('slaun',)).validate()
  for bad, message in (({'checkpoint_every': -1}, 'checkpoint_every must be >= 0'),
                       ({'max_nonfinite': 0}, 'max_nonfinite must be >= 1')):
    with pytest.raises(ValueError, match=message):
      ExperimentConfig(**bad).validate()


def test_forget_examples_in_the_test_set_stop_the_run_before_any_compute(monkeypatch):
  import jaxunlearn.experiment as experiment
  ds = synthetic_dataset()
  split = make_split(ds, 'random:10', 0)
  x_test = ds.x_test.copy()
  x_test[5] = ds.x_train[split.forget[2]]  # a forget image copied into the test set
  leaky = dataclasses.replace(ds, x_test=x_test)
  monkeypatch.setattr(experiment, 'load_dataset', lambda *a, **k: leaky)
  monkeypatch.setattr(experiment, 'train_classifier',
                      lambda *a, **k: pytest.fail('trained before the data check'))
  config = ExperimentConfig(dataset='toy', scenario='random:10', model='resnet1', width=4,
                            methods=('ft',), cache_dir=None, progress=False)
  with pytest.raises(ValueError, match=rf'1 forget examples of toy .*also appear in its test '
                                       rf'set \(train image {split.forget[2]} = test image 5.*'
                                       '--allow-duplicates'):
    run_experiment(config)


def test_dataset_rejects_mismatched_arrays():
  with pytest.raises(ValueError, match=r'y_train has shape \(3,\), expected \(4,\)'):
    Dataset('bad', np.zeros((4, 8, 8, 1)), np.zeros(3, np.int32), np.zeros((2, 8, 8, 1)),
            np.zeros(2, np.int32), 2)
  assert jax.tree.leaves(TOY.x_train)  # the module-level toy set is valid


_number = st.one_of(st.integers(-3, 3000).map(str), st.sampled_from(
    ['0', '-1', '1', '0.5', 'inf', '-inf', 'nan', '1e-9', 'abc', '', ' 2']))
_value = st.one_of(_number, st.floats(allow_nan=True, allow_infinity=True).map(repr))
_flags = st.lists(st.one_of(
    st.tuples(st.just('--width'), _number),
    st.tuples(st.just('--image-size'), _number),
    st.tuples(st.just('--devices'), _number),
    st.tuples(st.just('--seeds'), st.sampled_from(['0', '0,1', '-1', '1,1', 'a', '', ',', '0,,1'])),
    st.tuples(st.just('--methods'), st.lists(st.sampled_from(
        ['ft', 'ga', 'rl', 'salun', 'sfron', 'magic', '', ' ', 'retrain']), max_size=4).map(
            ','.join)),
    st.tuples(st.just('--scenario'), st.one_of(scenarios, st.sampled_from(
        ['class:3 ', ' class:3', 'class:10', 'random:0', 'random:100', 'random:50']))),
    st.tuples(st.just('--set'), st.tuples(st.sampled_from(
        ['ft.lr', 'ft.epochs', 'ft.batch_size', 'train.epochs', 'train.batch_size', 'ga.lr',
         'train.lr', 'ft.momentum', 'ft.lrr', 'x.y', 'ft']), _value).map('='.join)),
    st.tuples(st.just('--checkpoint-every'), _number),
    st.tuples(st.just('--max-nonfinite'), _number),
), max_size=4)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # both reset per use
@given(flags=_flags)
def test_any_command_line_is_a_run_or_a_one_line_error(flags, tmp_path_factory, monkeypatch,
                                                       capsys):
  """Every combination of these flags and values either reaches the run (stubbed here:
  the configuration was accepted) or ends with exit 2 and a one-line 'error:' within 5 s;
  never a traceback, never another exit status."""
  import time
  from jaxunlearn import cli, experiment

  def accepted(config, out, restart=False):  # what reaching the run must imply
    assert config.width >= 1 and (config.image_size is None or config.image_size >= 8)
    assert config.num_devices is None or config.num_devices >= 1
    assert config.seeds and all(s >= 0 for s in config.seeds)
    assert config.methods and all(m.strip() == m and m for m in config.methods)
    assert config.scenario == config.scenario.strip()
    train = config.train.replace(**config.overrides.get('train', {}))
    for hp in [train] + [resolve_hparams(m, config.overrides.get(m)) for m in config.methods]:
      for name, value in dataclasses.asdict(hp).items():
        assert not isinstance(value, float) or math.isfinite(value), (name, value)
        assert name != 'epochs' or value >= 1
    return {}
  monkeypatch.setattr(experiment, 'run_experiment', accepted)
  monkeypatch.setattr(cli, '_execute', lambda run, table, written: run() or 0)
  argv = ['run', '--quiet', '--no-cache', '--out', str(tmp_path_factory.mktemp('out'))]
  for flag, value in flags:
    argv += [flag, value]
  start = time.perf_counter()
  try:
    code = cli.main(argv)
  except SystemExit as e:  # argparse's usage errors
    code = e.code
  assert time.perf_counter() - start < 5, argv
  err = capsys.readouterr().err
  assert code in (0, 2), (argv, code, err)
  if code == 2:
    assert 'error:' in err and 'Traceback' not in err, (argv, err)
