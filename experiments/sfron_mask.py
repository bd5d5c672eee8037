"""How selective SFR-on's Fisher-ratio mask is on the generation job's originals.

    python experiments/sfron_mask.py --seeds 0,1,2 [--model unet] [--scenario class:3]

SFR-on ascends only the weights whose forget-set Fisher is at least ``gamma`` times the
retain set's (``m = [F_f / F_r >= gamma]``, ``gamma`` 1 in both references). For each
seed's original (the job's, trained or read from ``--cache-dir``), with SFR-on's own
Fisher settings for that model, this prints which share of the weights the ratio selects
at several ``gamma``, for

* the forget set against the retain set: the mask SFR-on uses;
* a draw of as many retain images (other classes only) against the rest of the retain
  set: what the ratio selects where there is nothing to find, the yardstick;

and the share of the forget set's Fisher mass that the selected weights hold. A mask that
finds the class selects far fewer weights than the draw does at the same ``gamma``, holding
most of the forget set's mass. Writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from jaxunlearn import checkpoint
from jaxunlearn.diffusion.experiment import GenerationConfig, generation_task
from jaxunlearn.diffusion.methods import sfron_fishers
from jaxunlearn.provenance import provenance
from jaxunlearn.saliency import fisher_ratio


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(tree)])


def _shares(forget_fisher, retain_fisher, gammas) -> dict:
  """Per ``gamma``: the percent of weights with ratio >= gamma, and the percent of the
  forget Fisher's mass on them."""
  f, ratio = _flat(forget_fisher), _flat(fisher_ratio(forget_fisher, retain_fisher))
  return {str(g): {'weights_pct': float(np.mean(ratio >= g) * 100),
                   'forget_mass_pct': float(f[ratio >= g].sum() / f.sum() * 100)}
          for g in gammas}


def _class_rows(forget_fisher, retain_fisher, gamma: float) -> list[int]:
  """The class-embedding rows (ids) that the mask selects entirely at ``gamma``."""
  rows = set()
  for path, ratio in jax.tree_util.tree_flatten_with_path(
      fisher_ratio(forget_fisher, retain_fisher))[0]:
    if 'class' in jax.tree_util.keystr(path) and np.ndim(ratio) == 2:
      rows.update(int(i) for i in np.flatnonzero((np.asarray(ratio) >= gamma).all(axis=1)))
  return sorted(rows)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='unet', help="the generation job's --model")
  p.add_argument('--scenario', default='class:3')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--gammas', default='1,2,5,10', help='Fisher-ratio thresholds')
  p.add_argument('--cache-dir', default=None, help="the job's cache of originals (default: "
                 "the job's default)")
  p.add_argument('--json', default=None, help='also write the numbers here')
  args = p.parse_args(argv)
  gammas = [float(g) for g in args.gammas.split(',')]
  seeds = [int(s) for s in args.seeds.split(',')]
  config = GenerationConfig(model=args.model, scenario=args.scenario, seeds=tuple(seeds),
                            methods=('sfron',), progress=False,
                            **({'cache_dir': args.cache_dir} if args.cache_dir else {}))
  hp = config.method_hparams()['sfron']
  rows, models = [], {}
  for seed in seeds:
    task, key = generation_task(config, seed)
    models[str(seed)] = {'key': key, 'fingerprint': checkpoint.fingerprint(task.variables)}
    n = len(task.forget_y)
    draw = np.random.default_rng(seed).permutation(len(task.retain_y))
    if len(draw) < 2 * n:
      raise SystemExit(f'the retain set ({len(draw)} images) is too small for a draw of '
                       f'{n} beside the rest')
    null, rest = draw[:n], draw[n:]
    forget_f, retain_f = sfron_fishers(task, hp)
    null_f, rest_f = sfron_fishers(task, hp, (task.retain_x[null], task.retain_y[null]),
                                   (task.retain_x[rest], task.retain_y[rest]))
    row = {'seed': seed, 'forget_images': n, 'retain_images': len(task.retain_y),
           'mask': _shares(forget_f, retain_f, gammas),
           'draw': _shares(null_f, rest_f, gammas),
           'class_rows_masked': _class_rows(forget_f, retain_f, hp.gamma)}
    rows.append(row)
    print(f'seed {seed} ({n} forget images): ' + '; '.join(
        f"gamma {g}: mask {row['mask'][g]['weights_pct']:.1f}% of the weights "
        f"({row['mask'][g]['forget_mass_pct']:.1f}% of the forget mass), draw "
        f"{row['draw'][g]['weights_pct']:.1f}%" for g in map(str, gammas))
          + f"; class-embedding rows masked: {row['class_rows_masked']}", flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'model': args.model, 'scenario': args.scenario, 'gammas': gammas,
                 'hparams': json.loads(json.dumps(config.resolved_hparams(), default=str)),
                 'rows': rows, 'original_models': models,
                 'provenance': provenance(vars(args))}, f, indent=1)


if __name__ == '__main__':
  main()
