"""How the generation job's original learns: its quality along its own training.

    python experiments/dit_training.py --seeds 0,2 --every 1500 [--model dit]
        [--set ddpm.lr=1e-3 ...] [--cache-dir DIR] [--json FILE]

Trains each seed's original exactly as ``jaxunlearn run --task generation`` does (the
model's recipe, ``--set ddpm.X=...`` on top; the trained original lands in ``--cache-dir``
under the job's own key, so a later run of the job starts from it) and every ``--every``
steps scores, as the job scores an original (UA of class 3, acc_remaining and FID of the
other classes, the job's sampler and classifier):

* ``raw``: the weights of that step;
* ``ema``: their exponential moving average at the recipe's ``ema_decay`` (or ``--decay``
  when the recipe keeps none), bias-corrected, kept on the host from every step's weights.

With a constant rate the row of step k is what a training of k steps gives. At the end it
scores the original the job caches (with ``ema_decay``: the library's average, which the
host's last ``ema`` row must equal) and writes JSON and a plot. A seed whose original is
cached already has no training to watch: give a fresh ``--cache-dir`` (by default the
originals go to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxunlearn import checkpoint
from jaxunlearn.cli import parse_overrides
from jaxunlearn.diffusion.experiment import GenerationConfig, GenerationJob
from jaxunlearn.provenance import provenance

SCORES = ('UA', 'FID_forget', 'FID', 'acc_remaining')


class _Watch:
  """The training's callback: the host EMA of every step's params, scores every ``every``."""

  def __init__(self, job, seed: int, decay: float, every: int):
    self.job, self.seed, self.decay, self.every = job, seed, decay, every
    self.ema, self.weight, self.step = None, 0.0, 0
    self.rows, self.start = [], time.perf_counter()

  def average(self):
    """The bias-corrected average of the params seen so far."""
    return jax.tree.map(lambda e: e / np.float32(self.weight), self.ema)

  def score(self, variables) -> dict:
    scores = self.job.score(variables, self.seed)
    return {k: scores[k] for k in SCORES}

  def __call__(self, step: int, variables) -> None:
    if step != self.step + 1:
      raise SystemExit(f'seed {self.seed}: the training resumed at step {step} from a partial '
                       'checkpoint; the average needs every step: remove the partial entry '
                       'or give a fresh --cache-dir')
    self.step = step
    params = jax.tree.map(lambda p: np.asarray(p, np.float32), variables['params'])
    d = np.float32(self.decay)
    self.ema = jax.tree.map(lambda p: (1 - d) * p, params) if self.ema is None else \
        jax.tree.map(lambda e, p: d * e + (1 - d) * p, self.ema, params)
    self.weight = d * self.weight + (1 - d)
    if step % self.every:
      return
    for kind, p in (('raw', params), ('ema', self.average())):
      row = {'seed': self.seed, 'step': step, 'kind': kind, **self.score({**variables,
                                                                        'params': p}),
             'minutes': round((time.perf_counter() - self.start) / 60, 1)}
      self.rows.append(row)
      print(' '.join(f'{k}={v:.1f}' if isinstance(v, float) else f'{k}={v}'
                     for k, v in row.items()), flush=True)


def plot(rows, path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  seeds = sorted({r['seed'] for r in rows})
  for ax, key, label in zip(axes, ('acc_remaining', 'UA', 'FID'),
                            ('acc_remaining (%): other classes drawn as themselves',
                             'UA (%) of class 3 (original: low is good)',
                             'FID, other classes (classifier features)')):
    for i, seed in enumerate(seeds):
      for kind, style in (('raw', ':'), ('ema', '-')):
        pts = [(r['step'], r[key]) for r in rows if r['seed'] == seed and r['kind'] == kind]
        ax.plot(*zip(*pts), style, marker='o', ms=3, color=f'C{i}',
                label=f'seed {seed}, {kind}')
    ax.set_title(label, fontsize=9)
    ax.set_xlabel('training step')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='dit', help="the generation job's --model")
  p.add_argument('--seeds', default='0,2')
  p.add_argument('--every', type=int, default=1500, help='steps between scores')
  p.add_argument('--set', action='append', default=[], metavar='ddpm.KEY=VALUE',
                 help="override the original's recipe (or the judge's classifier.KEY)")
  p.add_argument('--decay', type=float, default=0.999,
                 help='the EMA of the ema rows when the recipe keeps none')
  p.add_argument('--cache-dir', default=None, help='where the originals land (the job '
                 "reads them from there); a seed's original must not be there yet "
                 '(default: a temporary folder, removed at the end)')
  p.add_argument('--json', default=None, help='write the numbers here, and the plot beside '
                 'it (training.png)')
  args = p.parse_args(argv)
  if args.cache_dir is None:
    with tempfile.TemporaryDirectory() as tmp:
      return _main(args, tmp)
  return _main(args, args.cache_dir)


def _main(args, cache_dir: str):
  overrides = parse_overrides(args.set)
  if set(overrides) - {'ddpm', 'classifier'}:
    raise SystemExit('--set takes ddpm.KEY=VALUE (and classifier.KEY=VALUE) here, got '
                     f'{sorted(overrides)}')
  seeds = [int(s) for s in args.seeds.split(',')]
  config = GenerationConfig(model=args.model, seeds=tuple(seeds), methods=('ga',),
                            overrides=overrides, cache_dir=cache_dir, progress=False)
  config.validate()
  job = GenerationJob(config, None)
  job.prepare()
  decay = job.ddpm.ema_decay or args.decay
  rows, finals, models = [], [], {}
  for seed in seeds:
    watch = _Watch(job, seed, decay, args.every)
    variables, info = job.original(seed, job.ds.x_train, job.ds.y_train, callback=watch,
                                   callback_every=1)
    if info['hit']:
      raise SystemExit(f'seed {seed}: the original is cached already ({info["key"]} in '
                       f'{cache_dir}): there is no training to watch; give a fresh '
                       '--cache-dir')
    models[str(seed)] = {'key': info['key'], 'fingerprint': checkpoint.fingerprint(variables)}
    final = {'seed': seed, 'step': job.ddpm.steps, **watch.score(variables),
             'train_seconds': info['seconds']}
    if job.ddpm.ema_decay:  # the library's average against the host's
      final['max_abs_diff_to_host_ema'] = float(max(jax.tree.leaves(jax.tree.map(
          lambda a, b: np.max(np.abs(np.asarray(a) - b)), variables['params'],
          watch.average()))))
    print('cached original:', final, flush=True)
    rows += watch.rows
    finals.append(final)
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump({'model': args.model, 'decay': decay, 'every': args.every, 'rows': rows,
                 'originals': finals, 'original_models': models,
                 'hparams': json.loads(json.dumps(config.resolved_hparams(), default=str)),
                 'provenance': provenance(vars(args))}, f, indent=1)
    plot(rows, Path(args.json).with_name('training.png'))


if __name__ == '__main__':
  main()
