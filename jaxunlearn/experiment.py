"""The main job: train the original and Retrain, unlearn, evaluate, report.

``run_experiment`` is what ``jaxunlearn run`` calls and what a notebook can call directly::

    from jaxunlearn.experiment import ExperimentConfig, run_experiment
    results = run_experiment(ExperimentConfig(scenario='class:3', methods=('ft', 'rl')))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from jaxunlearn import checkpoint, methods as methods_lib
from jaxunlearn.data import check_before_loading, load_dataset, make_split, parse_scenario
from jaxunlearn.evaluate import (GradientAlignment, avg_gap, evaluate, model_outputs,
                                 summarize)
from jaxunlearn.job import Job, RunProgress, SeedRun, run_job
from jaxunlearn.models import make_model
from jaxunlearn.models.conv import lowering as conv_lowering
from jaxunlearn.parallel import Parallel
from jaxunlearn.train import LoopControl, TrainConfig, init_variables, train_classifier

REPORTED = ('UA', 'RA', 'TA', 'MIA', 'MIA_entropy', 'KL', 'JS', 'avg_gap', 'rte_s',
            'grad_cosine', 'skipped_steps')


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines a run; the defaults are the embedded digits benchmark.

  Attributes:
    dataset: 'digits' (embedded) or a TFDS name such as 'cifar10'.
    data_dir: TFDS data directory (ignored for digits).
    image_size: input side; None = 16 for digits, the stored size for TFDS.
    model, width: registered model name and its width (channels of the first stage).
    scenario: 'class:K' or 'random:P'.
    methods: names from :data:`jaxunlearn.methods.METHODS`.
    seeds: one original, Retrain and unlearning per seed; reported as mean +- std.
    train: recipe of the original model (Retrain uses ``retrain``'s hyperparameters,
      by default the same recipe).
    overrides: ``{method: {hyperparameter: value}}``.
    cache_dir: where trained originals and Retrains are cached (None: no cache).
    progress: show progress bars.
    tune: grid-search each method's learning rate first (:func:`tune_learning_rates`).
    tune_seeds: seeds of the tuning runs (disjoint from ``seeds``).
    tune_grid: factors applied to each method's default learning rate.
    alignment_every: every this many optimizer updates of each iterative method, measure
      the cosine between the forget and retain gradients on fixed probe batches
      (:class:`jaxunlearn.evaluate.GradientAlignment`); 0 = never. Its time is not
      counted in ``rte_s``.
    parallel: 'none', 'pmap', 'shard' or 'auto' (all local devices, ``pmap`` when there
      are several): how training and unlearning steps run (:mod:`jaxunlearn.parallel`).
    num_devices: devices for 'pmap'/'shard' (None: all local ones).
    shard_params: with 'shard', split params and optimizer state over the devices too.
    checkpoint_every: with an output directory, every loop (original and Retrain training
      too, in the cache) saves an orbax checkpoint every this many updates, and a run
      started again with the same configuration resumes from them and from the method runs
      already finished (``out_dir/progress.json``); 0 = off.
    max_nonfinite: steps with a non-finite loss, gradient or BatchNorm statistic are
      skipped and counted (``skipped_steps``); this many in a row stop that method's run,
      recorded under ``failures`` (None: never stop).
    allow_duplicates: run even if forget examples have byte-identical copies in the
      retain or test set (by default an error: that copy would teach the model again, or
      count as unseen).
    original: start from this trained model instead of training one: a directory holding
      an orbax checkpoint of our variables (:func:`jaxunlearn.checkpoint.save_variables`),
      or a reference PyTorch ResNet checkpoint file (SalUn's or SFR-on's layout,
      :mod:`jaxunlearn.convert.torch_resnet`; the data are re-normalised as it expects).
      Every seed unlearns this one model; Retrain still trains from scratch on D_r with
      the ``retrain`` recipe.
  """

  dataset: str = 'digits'
  data_dir: str | None = None
  image_size: int | None = None
  model: str = 'resnet18'
  width: int = 16
  scenario: str = 'class:3'
  methods: Sequence[str] = ('retrain', 'ft', 'ga', 'rl')
  seeds: Sequence[int] = (0,)
  train: TrainConfig = TrainConfig()
  overrides: dict = dataclasses.field(default_factory=dict)
  cache_dir: str | None = str(checkpoint.default_cache_dir())
  progress: bool = True
  tune: bool = False
  tune_seeds: Sequence[int] = (1000,)
  tune_grid: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)
  alignment_every: int = 5
  parallel: str = 'auto'
  num_devices: int | None = None
  shard_params: bool = False
  checkpoint_every: int = 50
  max_nonfinite: int | None = 10
  allow_duplicates: bool = False
  original: str | None = None

  @classmethod
  def from_dict(cls, d: dict) -> ExperimentConfig:
    """A config from a plain dict (a JSON or YAML file); a key that is not a setting is a
    ValueError naming the closest one. ``train`` may be a dict of :class:`TrainConfig`."""
    _check_settings(d, cls, 'the experiment')
    d = dict(d)
    if isinstance(d.get('train'), dict):
      _check_settings(d['train'], TrainConfig, 'train')
      d['train'] = TrainConfig(**d['train'])
    for key in ('methods', 'seeds', 'tune_seeds', 'tune_grid'):
      if key in d:
        d[key] = tuple(d[key])
    return cls(**d)

  def train_config(self) -> TrainConfig:
    """The original's training settings, ``--set train.*`` applied (cast and checked)."""
    return self.train.replace(**self.overrides.get('train', {}))

  def resolved_hparams(self) -> dict:
    """``results.json``'s ``hparams`` as this config resolves them now (no compute): each
    method's and the original's training settings. With ``tune`` the learning rates are
    chosen on data when the run starts: they are left out."""
    hparams = {}
    for name in self.methods:
      hp = methods_lib.resolve_hparams(name, self.overrides.get(name)).to_dict()
      hparams[name] = {k: v for k, v in hp.items() if not (self.tune and k == 'lr')}
    hparams['train'] = self.train_config().to_dict()
    return hparams

  def validate(self):
    """Checks names and overrides before any compute; raises ValueError saying what to fix."""
    parse_scenario(self.scenario)
    if self.width < 1:
      raise ValueError(f'--width must be >= 1 (channels of the first stage), got {self.width}')
    if not self.methods:
      raise ValueError('no methods given: pass e.g. --methods retrain,ft,ga,rl')
    if not self.seeds:
      raise ValueError('no seeds given: pass e.g. --seeds 0,1,2')
    self.devices()
    if self.alignment_every < 0:
      raise ValueError(f'alignment_every must be >= 0 (0 = off), got {self.alignment_every}')
    if self.checkpoint_every < 0:
      raise ValueError(f'checkpoint_every must be >= 0 (0 = off), got {self.checkpoint_every}')
    if self.max_nonfinite is not None and self.max_nonfinite < 1:
      raise ValueError(f'max_nonfinite must be >= 1 (or None: never stop), got '
                       f'{self.max_nonfinite}')
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'seeds repeat: {list(self.seeds)}')
    if self.original is not None:
      if not Path(self.original).exists():
        raise ValueError(f'--original {self.original}: no such file or directory (an orbax '
                         'checkpoint directory of ours, or a PyTorch ResNet checkpoint file)')
      if self.devices().is_ensemble:
        raise ValueError('--original gives one model; an ensemble run (parallel vmap) trains '
                         'its own: drop one of them')
    for name in self.methods:
      methods_lib.get_method(name)
    for name, hp in self.overrides.items():
      if name == 'train':
        _check_settings(hp, TrainConfig, 'train')
        self.train.replace(**hp)  # types and ranges, before any compute
        continue
      if name not in self.methods and name != 'retrain':  # Retrain is always the reference
        raise ValueError(f'--set names method {name!r}, which is not among --methods '
                         f'{",".join(self.methods)}'
                         f'{methods_lib.did_you_mean(name, [*self.methods, "train"])}')
      methods_lib.resolve_hparams(name, hp)
    # ResNet-18 keeps about 26 activations of the first stage's size per example.
    check_before_loading(self.dataset, self.image_size, self.scenario, data_dir=self.data_dir,
                         batch_size=self.train_config().batch_size,
                         channels_per_pixel=26 * self.width)


  def devices(self) -> Parallel:
    """The :class:`jaxunlearn.parallel.Parallel` of ``parallel`` and ``num_devices``."""
    return Parallel.from_setting(self.parallel, self.num_devices, self.shard_params)


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What every seed of a run shares."""

  config: ExperimentConfig
  dataset: Any
  model: Any
  train_cfg: TrainConfig
  retrain_hp: methods_lib.Hyperparameters
  like: Any
  original: Any = None  # the variables of --original (None: trained per seed)
  normalization: tuple | None = None  # (mean, std) the data were re-normalised to

  @property
  def cache_key(self):
    c = self.config
    key = {'dataset': c.dataset, 'image_shape': self.dataset.image_shape,
           'n_train': len(self.dataset.y_train), 'model': c.model, 'width': c.width}
    if self.normalization is not None:  # Retrains of other inputs are other models
      key['normalization'] = self.normalization
    return key


def _check_settings(keys, cls, what: str) -> None:
  """ValueError naming the first of ``keys`` that is not a field of dataclass ``cls``."""
  names = [f.name for f in dataclasses.fields(cls)]
  for key in keys:
    if key not in names:
      raise ValueError(f'{what} has no setting {key!r}{methods_lib.did_you_mean(key, names)}; '
                       f'settings are {", ".join(names)}')


def _setup(config: ExperimentConfig) -> _Setup:
  train_cfg = config.train_config()
  dataset = load_dataset(config.dataset, config.data_dir, config.image_size)
  model = make_model(config.model, dataset.num_classes, config.width)
  retrain_hp = methods_lib.resolve_hparams('retrain', config.overrides.get('retrain'))
  like = init_variables(model, dataset.image_shape, 0)
  original = normalization = None
  if config.original is not None:
    original, normalization = _load_original(config.original, config, model, like)
    if normalization is not None:
      dataset = dataset.renormalized(*normalization)
  return _Setup(config, dataset, model, train_cfg, retrain_hp, like, original, normalization)


def _load_original(path: str, config: ExperimentConfig, model, like):
  """``(variables, (mean, std) or None)`` of ``--original``: our orbax checkpoint (a
  directory), or a reference PyTorch ResNet (a file; with the input normalisation it
  expects). Raises ValueError when it is not a model of this run's architecture."""
  what = f'--original {path}'
  if Path(path).is_dir():
    variables = checkpoint.load_variables(path)
    want = jax.tree.map(np.shape, like)
    got = jax.tree.map(np.shape, variables)
    if want != got:
      raise ValueError(f'{what} does not hold variables of --model {config.model} --width '
                       f'{config.width} for {config.dataset} (its tree or shapes differ): give '
                       'the model and width it was trained with')
    return variables, None
  from jaxunlearn.convert.torch_resnet import load_torch_resnet
  converted = load_torch_resnet(path, config.dataset)
  theirs = converted.model
  if (theirs.stage_sizes, theirs.width, theirs.num_classes) != (
      tuple(model.stage_sizes), model.width, model.num_classes):
    raise ValueError(f'{what} is a ResNet with stages {theirs.stage_sizes}, width '
                     f'{theirs.width} and {theirs.num_classes} classes; this run builds '
                     f'{tuple(model.stage_sizes)}, {model.width}, {model.num_classes}: pass '
                     f'--model/--width to match (ResNet-18 of width {theirs.width}: --model '
                     f'resnet18 --width {theirs.width})')
  if converted.mean is None:
    raise ValueError(f'{what}: the checkpoint does not hold its input normalisation and none '
                     f'is known for {config.dataset} (SFR-on\'s layout is known for cifar10 and '
                     'cifar100)')
  return converted.variables, (converted.mean, converted.std)


@dataclasses.dataclass
class _Seed:
  """One seed's split, task (original weights inside), Retrain and its metrics."""

  split: Any
  task: methods_lib.UnlearnTask
  reference: Any
  ref_metrics: dict
  retrain_seconds: float
  original_key: str | None = None  # the original's cache key (None: given ready-made)


def _checked_split(s: _Setup, seed: int):
  """The seed's split, with the data checks that come before any compute."""
  ds, config = s.dataset, s.config
  split = make_split(ds, config.scenario, seed)
  if not config.allow_duplicates:
    for other, rows, where in (('retain', ds.x_train[split.retain], split.retain),
                               ('test', ds.x_test[split.test], split.test)):
      shared = methods_lib.shared_examples(ds.x_train[split.forget], rows)
      if shared:
        i, j = shared[0]
        raise ValueError(
            f'{len(shared)} forget examples of {ds.name} (scenario {config.scenario}, seed '
            f'{seed}) also appear in its {other} set (train image {split.forget[i]} = '
            f'{"train" if other == "retain" else "test"} image {where[j]}, ...): remove the '
            'duplicates from the dataset, or pass --allow-duplicates to run anyway')
  return split


def _prepare_seed(s: _Setup, seed: int, split=None) -> _Seed:
  config, ds, model = s.config, s.dataset, s.model
  split = _checked_split(s, seed) if split is None else split
  task = methods_lib.UnlearnTask(model, None, ds.x_train[split.forget], ds.y_train[split.forget],
                                 ds.x_train[split.retain], ds.y_train[split.retain],
                                 ds.num_classes, seed, config.progress,
                                 parallel=config.devices())
  control = lambda ckpt: LoopControl(ckpt, config.max_nonfinite)
  original, original_key = s.original, None
  if original is None:
    original, made = checkpoint.cached(
        config.cache_dir, 'original',
        {**s.cache_key, 'train': s.train_cfg.cache_dict(), 'seed': seed},
        lambda ckpt=None: train_classifier(model, ds.x_train, ds.y_train, s.train_cfg, seed,
                                           desc=f'original (seed {seed})',
                                           progress=config.progress, parallel=task.parallel,
                                           control=control(ckpt)),
        like=s.like, checkpoint_every=config.checkpoint_every)
    original_key = made['key']
  retrained, info = checkpoint.cached(
      config.cache_dir, 'retrain',
      {**s.cache_key, 'train': s.retrain_hp.cache_dict(), 'seed': seed,
       'scenario': config.scenario, 'forget': split.forget.tolist()},
      lambda ckpt=None: methods_lib.get_method('retrain').run(
          dataclasses.replace(task, control=control(ckpt)), s.retrain_hp),
      like=s.like, checkpoint_every=config.checkpoint_every)
  reference = model_outputs(model, retrained, ds, split, task.parallel)
  return _Seed(split, dataclasses.replace(task, variables=original), reference,
               evaluate(reference, ds, split, reference), info['seconds'], original_key)


def _score(s: _Setup, sd: _Seed, variables, split=None) -> dict:
  """Metrics of ``variables`` (and Avg. Gap to Retrain) on ``split`` (default: the seed's)."""
  split = split or sd.split
  out = model_outputs(s.model, variables, s.dataset, split, sd.task.parallel)
  reference, ref_metrics = sd.reference, sd.ref_metrics
  if split is not sd.split:  # a subset of the test set, e.g. its validation half
    rows = np.searchsorted(sd.split.test, split.test)
    reference = dataclasses.replace(reference, test=reference.test[rows])
    ref_metrics = evaluate(reference, s.dataset, split, reference)
  row = evaluate(out, s.dataset, split, reference)
  row['avg_gap'] = avg_gap(row, ref_metrics)
  return row


def prepare(config: ExperimentConfig) -> _Setup:
  """Loads the data and builds the model of ``config`` (what all its seeds share)."""
  config.validate()
  return _setup(config)


def prepare_seed(setup: _Setup, seed: int) -> _Seed:
  """One seed's split, original model (``.task``), Retrain and its metrics
  (``.ref_metrics``), trained or taken from the cache."""
  return _prepare_seed(setup, seed)


def score(setup: _Setup, seed_data: _Seed, variables) -> dict:
  """The protocol's metrics of ``variables`` on the seed's split, with Avg. Gap to Retrain.

  With :func:`prepare` and :func:`prepare_seed`, this evaluates any weights, e.g. along an
  unlearning run (``UnlearnTask.callback``), as ``experiments/study_sfron_steps.py`` does.
  """
  return _score(setup, seed_data, variables)


class _AlignmentMonitor(GradientAlignment):
  """The cosine between forget and retain gradients along a run, every ``every`` updates
  (update 0: the original, measured and compiled before the clock starts)."""

  def __init__(self, model, task, every: int):
    super().__init__(model, task.forget_x, task.forget_y, task.retain_x, task.retain_y,
                     seed=task.seed)
    self.every = every
    self(0, task.variables)
    self.seconds = 0.0

  def report(self) -> dict:
    if len(self.steps) <= 1:  # the method reported no updates (IU's one Newton step)
      return {}
    return {'grad_cosine': float(np.mean(self.cosines[1:])),
            'alignment': {'steps': list(self.steps), 'cosine': list(self.cosines)}}


class _SeedRun(SeedRun):
  """One seed of a classification run: the original, Retrain (the reference, given) and
  the metrics against it."""

  def __init__(self, s: _Setup, sd: _Seed):
    self.s, self.sd, self.task = s, sd, sd.task
    self.original_key = sd.original_key

  def original(self) -> dict:
    return _score(self.s, self.sd, self.task.variables)

  def given(self, name: str) -> dict | None:
    if name == 'retrain':
      return dict(self.sd.ref_metrics, avg_gap=0.0, rte_s=self.sd.retrain_seconds)
    return None

  def monitor(self, name: str, hp, original: dict):
    every = self.s.config.alignment_every
    return _AlignmentMonitor(self.s.model, self.task, every) if every else None

  def score(self, name: str, variables) -> dict:
    return _score(self.s, self.sd, variables)


class _Classification(Job):
  """The classification job's plug-in into :func:`jaxunlearn.job.run_job`."""

  registry = methods_lib.METHODS

  def __init__(self, config: ExperimentConfig):
    config.validate()
    self.config, self.s = config, _setup(config)
    seeds = list(config.seeds) + (list(config.tune_seeds) if config.tune else [])
    self.splits = {seed: _checked_split(self.s, seed) for seed in seeds}  # checks up front
    self.tuning = None

  def hparams(self, progress: RunProgress) -> dict:
    config, overrides = self.config, {**self.config.overrides}
    if config.tune:
      self.tuning = tune_learning_rates(self.s, progress, self.splits)
      for name, t in self.tuning.items():
        overrides[name] = {**overrides.get(name, {}), 'lr': t['lr']}
    return {name: methods_lib.resolve_hparams(name, overrides.get(name))
            for name in config.methods}

  def seed(self, seed: int) -> _SeedRun:
    return _SeedRun(self.s, _prepare_seed(self.s, seed, self.splits[seed]))

  def results(self, per_seed: dict, originals: list, hparams: dict) -> dict:
    config = self.config
    curves = {name: [row['alignment'] for row in rows if 'alignment' in row]
              for name, rows in per_seed.items()}
    per_seed = {name: [{k: v for k, v in row.items() if k != 'alignment'} for row in rows]
                for name, rows in per_seed.items()}
    results = {
        'dataset': config.dataset,
        'scenario': config.scenario,
        'seeds': list(config.seeds),
        'model': {'name': config.model, 'width': config.width,
                  'image_shape': list(self.s.dataset.image_shape),
                  'conv': conv_lowering()},
        'methods': {name: _summarize_rows(rows) for name, rows in per_seed.items()},
        'original': _summarize_rows(originals),
        'per_seed': per_seed,
        'hparams': {**{n: hp.to_dict() for n, hp in hparams.items()},
                    'train': self.s.train_cfg.to_dict()},
        'metrics_doc': 'percent for UA/RA/TA/MIA/MIA_entropy/avg_gap; nats for KL/JS (to '
                       'Retrain on D_f); seconds for rte_s; grad_cosine: mean over the run '
                       'of cos(forget grad, retain grad) on probe batches (see alignment: '
                       'per seed, the optimizer updates and the cosine there, update 0 = '
                       'the original); skipped_steps: steps not applied because something '
                       'in them was not finite; std is over seeds (ddof=1), over the seeds '
                       'that did not fail (see failures)',
    }
    alignment = {name: {'steps': [c['steps'] for c in cs], 'cosine': [c['cosine'] for c in cs]}
                 for name, cs in curves.items() if cs}
    if alignment:
      results['alignment'] = alignment
    if self.tuning is not None:
      results['tuning'] = self.tuning
    if config.original is not None:  # where the original came from
      results['model']['original'] = {'path': str(Path(config.original).absolute()),
                                      'normalization': self.s.normalization}
    return results

  def write(self, results: dict, out_dir: Path) -> None:
    write_results(results, out_dir)


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None,
                   restart: bool = False) -> dict:
  """Runs the whole protocol; writes ``results.json`` and ``results.png`` to ``out_dir``
  (and ``alignment.png`` with ``config.alignment_every``).

  With ``config.tune``, first grid-searches each method's learning rate against Retrain
  (see :func:`tune_learning_rates`) and runs with the chosen rates.

  The seed x method loop is the shared :func:`jaxunlearn.job.run_job`: with ``out_dir`` the
  run is resumable (``config.checkpoint_every``): killed at any point and started again
  with the same configuration, it skips what it had finished, resumes the interrupted loop
  from its last checkpoint, and ends with the same numbers as a run never interrupted
  (bit-identical on CPU; ``rte_s`` is the time an uninterrupted run takes).
  ``restart=True`` discards an unfinished run in ``out_dir`` instead.

  Returns:
    The results dict (schema in docs/running.md): per method ``{metric: {'mean', 'std'}}``,
    plus per-seed values, the original model's metrics and the hyperparameters used.
  """
  return run_job(_Classification(config), out_dir, restart)


def validation_split(split, fraction: float = 0.5):
  """The split with its test indices cut to a fixed validation part (first ``fraction`` of
  a seed-independent permutation)."""
  perm = np.random.default_rng(12345).permutation(len(split.test))
  keep = np.sort(split.test[perm[:max(1, int(len(perm) * fraction))]])
  return dataclasses.replace(split, test=keep)


def tune_learning_rates(s: _Setup, progress: RunProgress | None = None,
                        splits: dict | None = None) -> dict:
  """Grid-searches each method's ``lr`` (default x ``tune_grid``) for the lowest Avg. Gap.

  As the SalUn authors do per setting, but kept apart from the reported numbers: it runs
  on the tuning seeds (``tune_seeds``, disjoint from ``seeds``: other originals, other
  Retrains, for ``random:P`` other forget sets) and measures TA on a validation half of the
  test set. Methods without an ``lr``, and those whose ``lr`` the user set, are skipped.

  Each grid point's result is recorded in ``progress`` (a resumed run skips it).

  Returns:
    ``{method: {'lr': chosen, 'avg_gap_by_lr': {lr: mean Avg. Gap over tuning seeds}}}``.
  """
  config = s.config
  clash = set(config.tune_seeds) & set(config.seeds)
  if clash:
    raise ValueError(f'tuning seeds {sorted(clash)} are also reported seeds; choose others')
  names = [n for n in config.methods if n != 'retrain' and 'lr' in
           methods_lib.get_method(n).defaults and 'lr' not in config.overrides.get(n, {})]
  splits = splits or {}
  seeds = None  # prepared only if some grid point is still to run
  out = {}
  for name in names:
    base = methods_lib.resolve_hparams(name, config.overrides.get(name))
    gaps, record = {}, (progress.data['tuning'] if progress else {}).setdefault(name, {})
    for factor in config.tune_grid:
      hp = base.replace(lr=float(base.lr * factor))
      if repr(hp.lr) not in record:
        seeds = seeds or [_prepare_seed(s, seed, splits.get(seed)) for seed in config.tune_seeds]
        record[repr(hp.lr)] = float(np.mean([
            _score(s, sd, methods_lib.get_method(name).run(sd.task, hp),
                   validation_split(sd.split))['avg_gap'] for sd in seeds]))
        if progress:
          progress.save()
      gaps[hp.lr] = record[repr(hp.lr)]
    best = min(gaps, key=gaps.get)
    out[name] = {'lr': best, 'avg_gap_by_lr': {f'{k:g}': v for k, v in gaps.items()}}
    if config.progress:
      print(f'tuned {name}: lr={best:g} (Avg. Gap {gaps[best]:.2f} on validation)')
  return out


def _summarize_rows(rows, keys=REPORTED):
  """Mean and std of each metric over the rows of runs that did not fail."""
  rows = [r for r in rows if 'error' not in r]
  return {k: summarize([r[k] for r in rows]) for k in keys
          if rows and all(k in r for r in rows)}


def write_results(results: dict, out_dir: str | Path) -> None:
  from jaxunlearn.report import plot_alignment, plot_results
  out = Path(out_dir)
  checkpoint.write_json_atomic(out / 'results.json', results)
  plot_results(results, out / 'results.png')
  if results.get('alignment'):
    plot_alignment(results, out / 'alignment.png')
