"""The many-model evaluation job: N originals, N Retrains, N unlearnings per method.

    jaxunlearn eval-strong --dataset digits --scenario random:10 --methods ft,salun,sfron \\
        --models 16 --out strong

One forget set (the split of ``split_seed``) for every model. Model ``i`` of every kind
uses seed ``i``: the original is trained with it on D_f + D_r, Retrain with it on D_r, and
each method unlearns original ``i`` with it. Training and unlearning run ``chunk`` models
at a time as one ensemble (``jax.vmap`` over seeds, one compiled program per step); methods
outside :data:`ENSEMBLE_METHODS` (one-shot or teacher-based ones) run model by model.

Reported per method (:mod:`jaxunlearn.evaluate.strong`): the challenge's forgetting quality
and final score, U-LiRA's AUC, accuracy and TPR at 1% FPR, next to the mean over models of
UA, RA, TA and the single-model SVC MIA-Efficacy. ``results.json`` also holds every
example's epsilon and U-LiRA accuracy; ``strong.png`` plots their distributions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxunlearn import checkpoint
from jaxunlearn import methods as methods_lib
from jaxunlearn.data import check_before_loading, load_dataset, make_split
from jaxunlearn.evaluate import metrics as M
from jaxunlearn.evaluate import strong
from jaxunlearn.evaluate.protocol import Outputs, evaluate
from jaxunlearn.models import make_model
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.provenance import provenance
from jaxunlearn.step import predict
from jaxunlearn.train import LoopControl, TrainConfig, progress_bar, train_classifier

# Methods whose whole run is one of the loops of jaxunlearn.train (after per-model masks):
# these take an ensemble. The others run model by model.
ENSEMBLE_METHODS = frozenset({'retrain', 'ft', 'ga', 'rl', 'salun', 'salun_joint', 'sfron',
                              'sfron_hvp', 'lur', 'l1_sparse'})


@dataclasses.dataclass(frozen=True)
class StrongConfig:
  """Attributes:
    dataset, data_dir, image_size, model, width, scenario: as
      :class:`jaxunlearn.experiment.ExperimentConfig`.
    methods: registered method names; 'original' scores the originals themselves (nothing
      unlearned: the floor a method should beat).
    models: N, the models of each kind (at least 3; the papers use 128-512).
    split_seed: the seed of the one forget set.
    chunk: models per ensemble program (0: all N at once; 1: one model at a time, no
      vmap); lower it when N models' activations do not fit in memory. None: all at once
      on a GPU or TPU, 1 on the CPU, where XLA's vmapped convolutions measured half the
      speed of a loop (``experiments/bench_ensemble.py``: 8 digits ResNet-18s, 2 epochs,
      14.3 s vmapped vs 7.3 s one after another on 2 cores).
    train: the originals' recipe (Retrain: ``retrain``'s hyperparameters, by default the
      same).
    overrides: ``{method: {hyperparameter: value}}`` (also 'train').
  """

  dataset: str = 'digits'
  data_dir: str | None = None
  image_size: int | None = None
  model: str = 'resnet18'
  width: int = 16
  scenario: str = 'random:10'
  methods: Sequence[str] = ('ft', 'ga', 'rl', 'salun', 'sfron', 'lur')
  models: int = 16
  split_seed: int = 0
  chunk: int | None = None
  train: TrainConfig = TrainConfig()
  overrides: dict = dataclasses.field(default_factory=dict)
  cache_dir: str | None = str(checkpoint.default_cache_dir())
  progress: bool = True

  def validate(self) -> None:
    if self.width < 1:
      raise ValueError(f'--width must be >= 1 (channels of the first stage), got {self.width}')
    if self.models < 3:
      raise ValueError(f'--models must be >= 3 (the challenge score needs log(N - 1) > 0, '
                       f'U-LiRA two shadows per side), got {self.models}')
    if self.chunk is not None and self.chunk < 0:
      raise ValueError(f'chunk must be >= 0 (0 = all models at once), got {self.chunk}')
    if not self.methods:
      raise ValueError('give at least one method')
    for name, hp in self.overrides.items():
      if name in ('train', 'retrain'):  # Retrain always runs: the reference
        continue
      if name not in self.methods:
        raise ValueError(f'--set names method {name!r}, which is not among --methods')
    for name in ('retrain', *self.methods):
      if name != 'original':  # the originals scored as they are: no hyperparameters
        methods_lib.resolve_hparams(name, self.overrides.get(name))
    check_before_loading(self.dataset, self.image_size, self.scenario, data_dir=self.data_dir,
                         batch_size=self.train_config().batch_size,
                         channels_per_pixel=26 * self.width)

  def train_config(self) -> TrainConfig:
    """The originals' training settings, ``--set train.*`` applied (cast and checked)."""
    return self.train.replace(**self.overrides.get('train', {}))

  def resolved_hparams(self) -> dict:
    """``results.json``'s ``hparams`` as this config resolves them now (no compute):
    Retrain's and each method's, and the originals' training settings."""
    names = ['retrain', *[n for n in self.methods if n not in ('retrain', 'original')]]
    return {**{n: methods_lib.resolve_hparams(n, self.overrides.get(n)).to_dict()
               for n in names},
            'train': self.train_config().to_dict()}

  def chunk_size(self) -> int:
    if self.chunk is None:
      return 1 if jax.default_backend() == 'cpu' else self.models
    return self.chunk or self.models

  def chunks(self) -> list[list[int]]:
    size = self.chunk_size()
    seeds = list(range(self.models))
    return [seeds[i:i + size] for i in range(0, self.models, size)]


def _stack(trees):
  return jax.tree.map(lambda *a: np.concatenate(a), *trees)


def _run_chunks(config: StrongConfig, fn, ensemble: bool, desc: str):
  """``fn(seeds, parallel) -> stacked variables`` over the chunks (an ensemble per chunk),
  or model by model (``fn([seed], SINGLE)`` then stacked); returns (variables, seconds)."""
  start = time.perf_counter()
  outs = []
  ensemble = ensemble and config.chunk_size() > 1
  groups = config.chunks() if ensemble else [[s] for s in range(config.models)]
  for seeds in progress_bar(groups, desc=desc, disable=not config.progress, leave=False):
    if ensemble:
      outs.append(fn(tuple(seeds), Parallel.ensemble(len(seeds))))
    else:
      outs.append(jax.tree.map(lambda a: np.asarray(a)[None], fn(seeds[0], SINGLE)))
  return _stack(outs), time.perf_counter() - start


def _model_metrics(model, variables, ds, split, num_models: int) -> dict:
  """Per-model confidences on D_f and UA, RA, TA, MIA-Efficacy ([models] each)."""
  ens = Parallel.ensemble(num_models)
  logits_train = predict(model, variables, ds.x_train, parallel=ens)
  logits_test = predict(model, variables, ds.x_test[split.test], parallel=ens)
  rows = {'UA': [], 'RA': [], 'TA': [], 'MIA': []}
  for lt, lte in zip(logits_train, logits_test):  # the protocol's metrics, model by model
    out = Outputs(forget=M.softmax(lt[split.forget]), retain=M.softmax(lt[split.retain]),
                  test=M.softmax(lte))
    metrics = evaluate(out, ds, split)
    for key in rows:
      rows[key].append(metrics[key])
  conf = strong.logit_scaled_confidence(logits_train[:, split.forget],
                                         ds.y_train[split.forget])
  return {'conf': conf, **{k: np.asarray(v) for k, v in rows.items()}}


def run_strong(config: StrongConfig, out_dir: str | Path | None = None) -> dict:
  """Runs the job; writes ``results.json`` and ``strong.png`` to ``out_dir``."""
  config.validate()
  train_cfg = config.train_config()
  ds = load_dataset(config.dataset, config.data_dir, config.image_size)
  model = make_model(config.model, ds.num_classes, config.width)
  split = make_split(ds, config.scenario, config.split_seed)
  key = {'dataset': ds.name, 'image_size': ds.image_shape[0], 'model': config.model,
         'width': config.width, 'models': config.models}
  x_f, y_f = ds.x_train[split.forget], ds.y_train[split.forget]
  x_r, y_r = ds.x_train[split.retain], ds.y_train[split.retain]

  def originals():
    return _run_chunks(config, lambda seeds, par: train_classifier(
        model, ds.x_train, ds.y_train, train_cfg, seeds, desc='originals', progress=False,
        parallel=par), True, f'{config.models} originals')[0]

  original, info = checkpoint.cached(
      config.cache_dir, 'strong-originals', {**key, 'train': train_cfg.cache_dict()},
      originals)
  retrain_hp = methods_lib.resolve_hparams('retrain', config.overrides.get('retrain'))
  runs = ['retrain', *[n for n in config.methods if n != 'retrain']]
  results = {'task': 'strong', 'dataset': ds.name, 'scenario': config.scenario,
             'split_seed': config.split_seed, 'models': config.models,
             'forget_size': int(len(split.forget)), 'original_train_s': info['seconds'],
             'methods': {}, 'per_example': {}, 'hparams': config.resolved_hparams()}
  measured = {}
  for name in runs:
    if name == 'original':  # the floor: the originals, nothing unlearned
      measured[name] = _model_metrics(model, original, ds, split, config.models)
      measured[name].update(seconds=0.0, ensemble=False)
      continue
    hp = retrain_hp if name == 'retrain' else methods_lib.resolve_hparams(
        name, config.overrides.get(name))
    method = methods_lib.get_method(name)
    ensemble = name in ENSEMBLE_METHODS

    def unlearn(seeds, par, method=method, hp=hp):
      # Model i starts from original i (seeds are model indices); one model: no model axis.
      picked = jax.tree.map(lambda a: a[np.asarray(seeds)], original)
      task = methods_lib.UnlearnTask(model, picked, x_f, y_f, x_r, y_r, ds.num_classes,
                                     seeds, progress=False, parallel=par,
                                     control=LoopControl(None, None))
      return method.run(task, hp)

    if name == 'retrain':  # cached like the originals
      variables, info = checkpoint.cached(
          config.cache_dir, 'strong-retrain',
          {**key, 'train': retrain_hp.to_dict(), 'scenario': config.scenario,
           'forget': split.forget.tolist()},
          lambda: _run_chunks(config, unlearn, True, f'{config.models} retrains')[0])
      seconds = info['seconds']
    else:
      variables, seconds = _run_chunks(config, unlearn, ensemble, f'{name} x{config.models}')
    measured[name] = _model_metrics(model, variables, ds, split, config.models)
    measured[name]['seconds'] = seconds
    measured[name]['ensemble'] = ensemble and config.chunk_size() > 1
  ref = measured['retrain']
  for name in runs:
    m = measured[name]
    row = {k: M.summarize(m[k].tolist()) for k in ('UA', 'RA', 'TA', 'MIA')}
    row.update(rte_s_per_model=m['seconds'] / config.models, ensemble=m['ensemble'])
    if name != 'retrain':
      ch = strong.challenge_score(m['conf'], ref['conf'],
                                  unlearned_accuracy={'RA': m['RA'], 'TA': m['TA']},
                                  retrained_accuracy={'RA': ref['RA'], 'TA': ref['TA']})
      ul = strong.ulira(m['conf'], ref['conf'])
      row.update(forget_quality=ch['forget_quality'], challenge_score=ch['score'],
                 ulira_auc=ul['auc'], ulira_accuracy=ul['accuracy'],
                 ulira_tpr_at_1pct_fpr=ul['tpr_at_1%_fpr'])
      results['per_example'][name] = {'epsilon': ch['epsilons'].tolist(),
                                      'ulira_accuracy': ul['example_accuracy'].tolist()}
    results['methods'][name] = row
  if out_dir is not None:
    from jaxunlearn.report import plot_strong
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results['provenance'] = provenance(config)
    checkpoint.write_json_atomic(out / 'results.json', results)
    plot_strong(results, out / 'strong.png')
  return results
