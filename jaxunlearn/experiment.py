"""The main job: train the original and Retrain, unlearn, evaluate, report.

``run_experiment`` is what ``jaxunlearn run`` calls and what a notebook can call directly::

    from jaxunlearn.experiment import ExperimentConfig, run_experiment
    results = run_experiment(ExperimentConfig(scenario='class:3', methods=('ft', 'rl')))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxunlearn import checkpoint, methods as methods_lib
from jaxunlearn.data import load_dataset, make_split, parse_scenario
from jaxunlearn.evaluate import (GradientAlignment, avg_gap, evaluate, model_outputs,
                                 summarize)
from jaxunlearn.models import make_model
from jaxunlearn.parallel import Parallel
from jaxunlearn.train import TrainConfig, init_variables, train_classifier

REPORTED = ('UA', 'RA', 'TA', 'MIA', 'MIA_entropy', 'KL', 'JS', 'avg_gap', 'rte_s',
            'grad_cosine')


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
  alignment_every: int = 0
  parallel: str = 'none'
  num_devices: int | None = None
  shard_params: bool = False

  def validate(self):
    """Checks names and overrides before any compute; raises ValueError saying what to fix."""
    parse_scenario(self.scenario)
    if not self.methods:
      raise ValueError('no methods given: pass e.g. --methods retrain,ft,ga,rl')
    if not self.seeds:
      raise ValueError('no seeds given: pass e.g. --seeds 0,1,2')
    self.devices()
    if self.alignment_every < 0:
      raise ValueError(f'alignment_every must be >= 0 (0 = off), got {self.alignment_every}')
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'seeds repeat: {list(self.seeds)}')
    for name in self.methods:
      methods_lib.get_method(name)
    for name, hp in self.overrides.items():
      if name == 'train':
        bad = set(hp) - {f.name for f in dataclasses.fields(TrainConfig)}
        if bad:
          raise ValueError(f'train has no setting {sorted(bad)}; settings are '
                           f'{[f.name for f in dataclasses.fields(TrainConfig)]}')
        continue
      if name not in self.methods and name != 'retrain':  # Retrain is always the reference
        raise ValueError(f'--set names method {name!r}, which is not among --methods '
                         f'{",".join(self.methods)}')
      methods_lib.resolve_hparams(name, hp)


  def devices(self) -> Parallel:
    """The :class:`jaxunlearn.parallel.Parallel` of ``parallel`` and ``num_devices``."""
    if self.parallel == 'auto':
      return Parallel.auto(self.num_devices)
    return Parallel(self.parallel, self.num_devices, self.shard_params)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What every seed of a run shares."""

  config: ExperimentConfig
  dataset: Any
  model: Any
  train_cfg: TrainConfig
  retrain_hp: dict
  like: Any

  @property
  def cache_key(self):
    c = self.config
    return {'dataset': c.dataset, 'image_shape': self.dataset.image_shape,
            'n_train': len(self.dataset.y_train), 'model': c.model, 'width': c.width}


def _setup(config: ExperimentConfig) -> _Setup:
  train_cfg = dataclasses.replace(config.train, **{
      k: methods_lib.cast_like(v, getattr(config.train, k), f'train.{k}')
      for k, v in config.overrides.get('train', {}).items()})
  dataset = load_dataset(config.dataset, config.data_dir, config.image_size)
  model = make_model(config.model, dataset.num_classes, config.width)
  retrain_hp = methods_lib.resolve_hparams('retrain', config.overrides.get('retrain'))
  return _Setup(config, dataset, model, train_cfg, retrain_hp,
                init_variables(model, dataset.image_shape, 0))


@dataclasses.dataclass
class _Seed:
  """One seed's split, task (original weights inside), Retrain and its metrics."""

  split: Any
  task: methods_lib.UnlearnTask
  reference: Any
  ref_metrics: dict
  retrain_seconds: float


def _prepare_seed(s: _Setup, seed: int) -> _Seed:
  config, ds, model = s.config, s.dataset, s.model
  split = make_split(ds, config.scenario, seed)
  task = methods_lib.UnlearnTask(model, None, ds.x_train[split.forget], ds.y_train[split.forget],
                                 ds.x_train[split.retain], ds.y_train[split.retain],
                                 ds.num_classes, seed, config.progress,
                                 parallel=config.devices())
  original, _ = checkpoint.cached(
      config.cache_dir, 'original',
      {**s.cache_key, 'train': dataclasses.asdict(s.train_cfg), 'seed': seed},
      lambda: train_classifier(model, ds.x_train, ds.y_train, s.train_cfg, seed,
                               desc=f'original (seed {seed})', progress=config.progress,
                               parallel=task.parallel),
      like=s.like)
  retrained, info = checkpoint.cached(
      config.cache_dir, 'retrain',
      {**s.cache_key, 'train': s.retrain_hp, 'seed': seed, 'scenario': config.scenario,
       'forget': split.forget.tolist()},
      lambda: methods_lib.get_method('retrain').run(task, s.retrain_hp), like=s.like)
  reference = model_outputs(model, retrained, ds, split, task.parallel)
  return _Seed(split, dataclasses.replace(task, variables=original), reference,
               evaluate(reference, ds, split, reference), info['seconds'])


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


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None) -> dict:
  """Runs the whole protocol; writes ``results.json`` and ``results.png`` to ``out_dir``
  (and ``alignment.png`` with ``config.alignment_every``).

  With ``config.tune``, first grid-searches each method's learning rate against Retrain
  (see :func:`tune_learning_rates`) and runs with the chosen rates.

  Returns:
    The results dict (schema in README.md): per method ``{metric: {'mean', 'std'}}``, plus
    per-seed values, the original model's metrics and the hyperparameters used.
  """
  config.validate()
  s = _setup(config)
  tuning = tune_learning_rates(s) if config.tune else None
  overrides = {**config.overrides}
  for name, t in (tuning or {}).items():
    overrides[name] = {**overrides.get(name, {}), 'lr': t['lr']}
  hparams = {name: methods_lib.resolve_hparams(name, overrides.get(name))
             for name in config.methods}

  per_seed = {name: [] for name in config.methods}
  alignment = {name: {'steps': [], 'cosine': []} for name in config.methods}
  original_rows = []  # the model before unlearning, for context
  for seed in config.seeds:
    sd = _prepare_seed(s, seed)
    original_rows.append(_score(s, sd, sd.task.variables))
    for name in config.methods:
      if name == 'retrain':
        per_seed[name].append(dict(sd.ref_metrics, avg_gap=0.0, rte_s=sd.retrain_seconds))
        continue
      task, probe = sd.task, None
      if config.alignment_every:
        probe = GradientAlignment(s.model, task.forget_x, task.forget_y, task.retain_x,
                                  task.retain_y, seed=seed)
        probe(0, task.variables)  # the original's alignment (and the compile), untimed
        probe.seconds = 0.0
        task = dataclasses.replace(task, callback=probe, callback_every=config.alignment_every)
      method = methods_lib.get_method(name)
      variables, seconds = _timed(functools.partial(method.run, task, hparams[name]))
      row = dict(_score(s, sd, variables), rte_s=seconds - (probe.seconds if probe else 0.0))
      if probe is not None and len(probe.steps) > 1:  # the method reported its updates
        row['grad_cosine'] = float(np.mean(probe.cosines[1:]))
        alignment[name]['steps'].append(probe.steps)
        alignment[name]['cosine'].append(probe.cosines)
      per_seed[name].append(row)

  results = {
      'dataset': config.dataset,
      'scenario': config.scenario,
      'seeds': list(config.seeds),
      'model': {'name': config.model, 'width': config.width,
                'image_shape': list(s.dataset.image_shape)},
      'methods': {name: _summarize_rows(rows) for name, rows in per_seed.items()},
      'original': _summarize_rows(original_rows),
      'per_seed': per_seed,
      'hparams': {**hparams, 'train': dataclasses.asdict(s.train_cfg)},
      'metrics_doc': 'percent for UA/RA/TA/MIA/MIA_entropy/avg_gap; nats for KL/JS (to '
                     'Retrain on D_f); seconds for rte_s; grad_cosine: mean over the run '
                     'of cos(forget grad, retain grad) on probe batches (see alignment: '
                     'per seed, the optimizer updates and the cosine there, update 0 = '
                     'the original); std is over seeds (ddof=1)',
  }
  alignment = {k: v for k, v in alignment.items() if v['steps']}
  if alignment:
    results['alignment'] = alignment
  if tuning is not None:
    results['tuning'] = tuning
  if out_dir is not None:
    write_results(results, out_dir)
  return results


def validation_split(split, fraction: float = 0.5):
  """The split with its test indices cut to a fixed validation part (first ``fraction`` of
  a seed-independent permutation)."""
  perm = np.random.default_rng(12345).permutation(len(split.test))
  keep = np.sort(split.test[perm[:max(1, int(len(perm) * fraction))]])
  return dataclasses.replace(split, test=keep)


def tune_learning_rates(s: _Setup) -> dict:
  """Grid-searches each method's ``lr`` (default x ``tune_grid``) for the lowest Avg. Gap.

  As the SalUn authors do per setting, but kept apart from the reported numbers: it runs
  on the tuning seeds (``tune_seeds``, disjoint from ``seeds``: other originals, other
  Retrains, for ``random:P`` other forget sets) and measures TA on a validation half of the
  test set. Methods without an ``lr``, and those whose ``lr`` the user set, are skipped.

  Returns:
    ``{method: {'lr': chosen, 'avg_gap_by_lr': {lr: mean Avg. Gap over tuning seeds}}}``.
  """
  config = s.config
  clash = set(config.tune_seeds) & set(config.seeds)
  if clash:
    raise ValueError(f'tuning seeds {sorted(clash)} are also reported seeds; choose others')
  names = [n for n in config.methods if n != 'retrain' and 'lr' in
           methods_lib.get_method(n).defaults and 'lr' not in config.overrides.get(n, {})]
  seeds = [_prepare_seed(s, seed) for seed in config.tune_seeds]
  out = {}
  for name in names:
    base = methods_lib.resolve_hparams(name, config.overrides.get(name))
    gaps = {}
    for factor in config.tune_grid:
      hp = dict(base, lr=float(base['lr'] * factor))
      gaps[hp['lr']] = float(np.mean([
          _score(s, sd, methods_lib.get_method(name).run(sd.task, hp),
                 validation_split(sd.split))['avg_gap'] for sd in seeds]))
    best = min(gaps, key=gaps.get)
    out[name] = {'lr': best, 'avg_gap_by_lr': {f'{k:g}': v for k, v in gaps.items()}}
    if config.progress:
      print(f'tuned {name}: lr={best:g} (Avg. Gap {gaps[best]:.2f} on validation)')
  return out


def _summarize_rows(rows, keys=REPORTED):
  return {k: summarize([r[k] for r in rows]) for k in keys if all(k in r for r in rows)}


def write_results(results: dict, out_dir: str | Path) -> None:
  from jaxunlearn.report import plot_alignment, plot_results
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'results.json').write_text(json.dumps(results, indent=1))
  plot_results(results, out / 'results.png')
  if results.get('alignment'):
    plot_alignment(results, out / 'alignment.png')
