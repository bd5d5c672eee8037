"""The main job: train the original and Retrain, unlearn, evaluate, report.

``run_experiment`` is what ``jaxunlearn run`` calls and what a notebook can call directly::

    from jaxunlearn.experiment import ExperimentConfig, run_experiment
    results = run_experiment(ExperimentConfig(scenario='class:3', methods=('ft', 'rl')))
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxunlearn import checkpoint, methods as methods_lib
from jaxunlearn.data import load_dataset, make_split, parse_scenario
from jaxunlearn.evaluate import GAP_METRICS, avg_gap, evaluate, model_outputs, summarize
from jaxunlearn.models import make_model
from jaxunlearn.train import TrainConfig, init_variables, train_classifier

REPORTED = ('UA', 'RA', 'TA', 'MIA', 'MIA_entropy', 'KL', 'JS', 'avg_gap', 'rte_s')


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

  def validate(self):
    """Checks names and overrides before any compute; raises ValueError saying what to fix."""
    parse_scenario(self.scenario)
    if not self.methods:
      raise ValueError('no methods given: pass e.g. --methods retrain,ft,ga,rl')
    if not self.seeds:
      raise ValueError('no seeds given: pass e.g. --seeds 0,1,2')
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
      if name not in self.methods:
        raise ValueError(f'--set names method {name!r}, which is not among --methods '
                         f'{",".join(self.methods)}')
      methods_lib.resolve_hparams(name, hp)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None) -> dict:
  """Runs the whole protocol; writes ``results.json`` and ``results.png`` to ``out_dir``.

  Returns:
    The results dict (schema in README.md): per method ``{metric: {'mean', 'std'}}``, plus
    per-seed values, the original model's metrics and the hyperparameters used.
  """
  config.validate()
  train_cfg = dataclasses.replace(config.train, **{
      k: methods_lib.cast_like(v, getattr(config.train, k), f'train.{k}')
      for k, v in config.overrides.get('train', {}).items()})
  dataset = load_dataset(config.dataset, config.data_dir, config.image_size)
  model = make_model(config.model, dataset.num_classes, config.width)
  hparams = {name: methods_lib.resolve_hparams(name, config.overrides.get(name))
             for name in config.methods}
  retrain_hp = methods_lib.resolve_hparams('retrain', config.overrides.get('retrain'))
  base_key = {'dataset': config.dataset, 'image_shape': dataset.image_shape,
              'n_train': len(dataset.y_train), 'model': config.model, 'width': config.width}
  like = init_variables(model, dataset.image_shape, 0)

  per_seed = {name: [] for name in config.methods}
  original_rows = []  # the model before unlearning, for context
  for seed in config.seeds:
    split = make_split(dataset, config.scenario, seed)
    xf, yf = dataset.x_train[split.forget], dataset.y_train[split.forget]
    xr, yr = dataset.x_train[split.retain], dataset.y_train[split.retain]
    task = methods_lib.UnlearnTask(model, None, xf, yf, xr, yr, dataset.num_classes, seed,
                                   config.progress)
    original, _ = checkpoint.cached(
        config.cache_dir, 'original',
        {**base_key, 'train': dataclasses.asdict(train_cfg), 'seed': seed},
        lambda: train_classifier(model, dataset.x_train, dataset.y_train, train_cfg, seed,
                                 desc=f'original (seed {seed})', progress=config.progress),
        like=like)
    retrained, retrain_info = checkpoint.cached(
        config.cache_dir, 'retrain',
        {**base_key, 'train': retrain_hp, 'seed': seed, 'scenario': config.scenario,
         'forget': split.forget.tolist()},
        lambda: methods_lib.get_method('retrain').run(task, retrain_hp), like=like)
    reference = model_outputs(model, retrained, dataset, split)
    ref_metrics = evaluate(reference, dataset, split, reference)
    row = evaluate(model_outputs(model, original, dataset, split), dataset, split, reference)
    original_rows.append(dict(row, avg_gap=avg_gap(row, ref_metrics)))
    task = dataclasses.replace(task, variables=original)
    for name in config.methods:
      if name == 'retrain':
        row = dict(ref_metrics, rte_s=retrain_info['seconds'])
      else:
        variables, seconds = _timed(lambda: methods_lib.get_method(name).run(task, hparams[name]))
        row = dict(evaluate(model_outputs(model, variables, dataset, split), dataset, split,
                            reference), rte_s=seconds)
      row['avg_gap'] = avg_gap(row, ref_metrics)
      per_seed[name].append(row)

  results = {
      'dataset': config.dataset,
      'scenario': config.scenario,
      'seeds': list(config.seeds),
      'model': {'name': config.model, 'width': config.width,
                'image_shape': list(dataset.image_shape)},
      'methods': {name: _summarize_rows(rows) for name, rows in per_seed.items()},
      'original': _summarize_rows(original_rows),
      'per_seed': per_seed,
      'hparams': {**hparams, 'train': dataclasses.asdict(train_cfg)},
      'metrics_doc': 'percent for UA/RA/TA/MIA/MIA_entropy/avg_gap; nats for KL/JS (to '
                     'Retrain on D_f); seconds for rte_s; std is over seeds (ddof=1)',
  }
  if out_dir is not None:
    write_results(results, out_dir)
  return results


def _summarize_rows(rows, keys=REPORTED):
  return {k: summarize([r[k] for r in rows]) for k in keys if all(k in r for r in rows)}


def write_results(results: dict, out_dir: str | Path) -> None:
  from jaxunlearn.report import plot_results
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'results.json').write_text(json.dumps(results, indent=1))
  plot_results(results, out / 'results.png')
