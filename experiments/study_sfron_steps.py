"""How many unlearning steps does each method need? SFR-on's central claim, on our data.

    python experiments/study_sfron_steps.py [--scenario class:3] [--seeds 0,1,2]
        [--methods sfron,sfron_hvp,salun,ga] [--every 4] [--set sfron.iterations=200]
        [--cache-dir DIR] [--json FILE]

SFR-on (arXiv 2409.19732) claims it reaches Retrain in far fewer steps than other methods.
Each method runs with its default recipe; every ``--every`` optimizer updates (forget and
retain steps both count) its current weights are evaluated with the full protocol (UA, RA,
TA, MIA, Avg. Gap to Retrain). Prints, per method, the first update count at which UA
reaches Retrain's UA (within ``--ua-tolerance`` points) and the Avg. Gap there and at the
end; with ``--json FILE`` writes the curves (per seed), that summary, the methods' resolved
hyperparameters and the provenance there, and ``steps.png`` beside it (UA, RA, TA and Avg.
Gap against updates, mean over seeds, Retrain dashed). Registered as
``steps_sfron_class3`` (``python experiments/reproduce.py --only steps_sfron_class3``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxunlearn import experiment, methods as methods_lib
from jaxunlearn.cli import parse_overrides
from jaxunlearn.provenance import provenance

PANELS = (('UA', 'UA (forget) %'), ('RA', 'RA (retain) %'), ('TA', 'TA (test) %'),
          ('avg_gap', 'Avg. Gap to Retrain'))


def curves(config: experiment.ExperimentConfig, every: int) -> dict:
  """``{method: [per seed: {'updates': [...], 'UA': [...], ...}]}`` and Retrain's rows."""
  setup = experiment.prepare(config)
  out = {name: [] for name in config.methods}
  retrain = []
  for seed in config.seeds:
    sd = experiment.prepare_seed(setup, seed)
    retrain.append(sd.ref_metrics)
    start = experiment.score(setup, sd, sd.task.variables)
    for name in config.methods:
      rows = {'updates': [0], **{k: [start[k]] for k in start}}

      def record(updates, variables, rows=rows):
        row = experiment.score(setup, sd, variables)
        rows['updates'].append(updates)
        for k in row:
          rows[k].append(row[k])

      hp = methods_lib.resolve_hparams(name, config.overrides.get(name))
      task = dataclasses.replace(sd.task, callback=record, callback_every=every)
      t0 = time.perf_counter()
      methods_lib.get_method(name).run(task, hp)
      rows['seconds_with_evaluation'] = time.perf_counter() - t0
      out[name].append(rows)
      print(f'seed {seed} {name}: {rows["updates"][-1]} updates, final UA {rows["UA"][-1]:.2f}'
            f' RA {rows["RA"][-1]:.2f} TA {rows["TA"][-1]:.2f} gap {rows["avg_gap"][-1]:.2f}',
            flush=True)
  return {'methods': out, 'retrain': retrain}


def steps_to_reach(rows: dict, target: float, tolerance: float):
  """First update count whose UA is within ``tolerance`` of (or above) ``target``."""
  for updates, ua in zip(rows['updates'], rows['UA']):
    if ua >= target - tolerance:
      return updates
  return None


def summarize(result: dict, tolerance: float) -> dict:
  summary = {}
  for name, runs in result['methods'].items():
    reached, gaps_at, final_gap = [], [], []
    for rows, ref in zip(runs, result['retrain']):
      n = steps_to_reach(rows, ref['UA'], tolerance)
      reached.append(n)
      if n is not None:
        gaps_at.append(rows['avg_gap'][rows['updates'].index(n)])
      final_gap.append(rows['avg_gap'][-1])
    summary[name] = {
        'updates_to_retrain_ua': reached,
        'avg_gap_when_reached': gaps_at,
        'final_avg_gap': float(np.mean(final_gap)),
        'final_updates': runs[0]['updates'][-1],
    }
  return summary


def plot(result: dict, path: Path, title: str):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6))
  colors = plt.get_cmap('tab10')
  for i, (name, runs) in enumerate(result['methods'].items()):
    for ax, (key, label) in zip(axes, PANELS):
      # Seeds share the evaluation points when they share the recipe; align on the shortest.
      n = min(len(r['updates']) for r in runs)
      x = runs[0]['updates'][:n]
      y = np.array([r[key][:n] for r in runs])
      ax.plot(x, y.mean(0), color=colors(i), label=name, lw=1.6)
      if len(runs) > 1:
        ax.fill_between(x, y.min(0), y.max(0), color=colors(i), alpha=0.15, lw=0)
  for ax, (key, label) in zip(axes, PANELS):
    if key != 'avg_gap':
      ref = np.mean([r[key] for r in result['retrain']])
      ax.axhline(ref, color='k', ls='--', lw=1, label='Retrain')
    ax.set_xlabel('optimizer updates')
    ax.set_title(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(title + '  (mean over seeds, band = min..max)')
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scenario', default='class:3')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--methods', default='sfron,sfron_hvp,salun,ga')
  parser.add_argument('--every', type=int, default=4, help='evaluate every N updates')
  parser.add_argument('--ua-tolerance', type=float, default=1.0)
  parser.add_argument('--set', action='append', default=[], metavar='METHOD.KEY=VALUE')
  parser.add_argument('--model', default='resnet18')
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image-size', type=int, default=None)
  parser.add_argument('--cache-dir', default=None, help="the run's cache of originals and "
                      'Retrains (default: the library\'s)')
  parser.add_argument('--json', default=None, help='write the curves, summary and provenance '
                      'here, and steps.png beside it')
  parser.add_argument('--merge', default=None, metavar='RESULTS_JSON',
                      help="keep the curves of a previous run's other methods (same scenario "
                           'and seeds), e.g. to re-run one method of a long study')
  args = parser.parse_args(argv)

  methods = tuple(args.methods.split(','))
  config = experiment.ExperimentConfig(
      scenario=args.scenario, methods=methods, seeds=tuple(int(s) for s in args.seeds.split(',')),
      overrides=parse_overrides(args.set), progress=False, model=args.model, width=args.width,
      image_size=args.image_size,
      **({'cache_dir': args.cache_dir} if args.cache_dir else {}))
  config.validate()
  result = curves(config, args.every)
  if args.merge:
    previous = json.loads(Path(args.merge).read_text())
    if previous['config']['scenario'] != args.scenario or \
       previous['config']['seeds'] != list(config.seeds):
      raise SystemExit(f'--merge {args.merge}: it ran another scenario or other seeds')
    result['methods'] = {**{k: v for k, v in previous['methods'].items()
                            if k not in result['methods']}, **result['methods']}
  result['summary'] = summarize(result, args.ua_tolerance)
  result['config'] = {'scenario': args.scenario, 'seeds': list(config.seeds),
                      'every': args.every, 'ua_tolerance': args.ua_tolerance,
                      'overrides': config.overrides}
  result['hparams'] = json.loads(json.dumps(config.resolved_hparams(), default=str))
  ref_ua = np.mean([r['UA'] for r in result['retrain']])
  print(f'\nRetrain UA {ref_ua:.2f}; updates until UA >= Retrain UA - {args.ua_tolerance:g} '
        f'(per seed), Avg. Gap there, Avg. Gap at the end:')
  for name, s in result['summary'].items():
    reached = ', '.join('never' if n is None else str(n) for n in s['updates_to_retrain_ua'])
    at = ', '.join(f'{g:.2f}' for g in s['avg_gap_when_reached']) or '-'
    print(f'  {name:10s} reached at [{reached}] of {s["final_updates"]}   gap there [{at}]   '
          f'final gap {s["final_avg_gap"]:.2f}')
  if args.json:
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    result['provenance'] = provenance(vars(args))
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_name('steps.png'), f'digits {args.scenario}')
    print(f'wrote {out} and {out.with_name("steps.png")}')


if __name__ == '__main__':
  main()
