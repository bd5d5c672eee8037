"""Human-facing output: the results table and the results plot."""

from __future__ import annotations

from pathlib import Path

from jaxunlearn.checkpoint import save_figure

TABLE_COLUMNS = (('UA', 'UA'), ('RA', 'RA'), ('TA', 'TA'), ('MIA', 'MIA'),
                 ('avg_gap', 'Avg.Gap'), ('KL', 'KL(Rt||.)'), ('rte_s', 'RTE s'),
                 ('grad_cosine', 'cos(gf,gr)'), ('skipped_steps', 'skipped'))
BAR_METRICS = ('UA', 'RA', 'TA', 'MIA')


def _cell(stat: dict | None, digits: int) -> str:
  if stat is None:
    return '-'
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def text_table(title: str, header: list[str], body: list[list[str]], footer=()) -> str:
  """A plain-text table: the first column left-aligned, the others right-aligned."""
  widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
  line = lambda r: '  '.join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in  # noqa: E731
                             enumerate(zip(r, widths)))
  return '\n'.join([title, line(header), line(['-' * w for w in widths])] +
                   [line(r) for r in body] + list(footer))


def format_table(results: dict) -> str:
  """A plain-text table: one row per method (and the original), mean ± std over seeds."""
  rows = [('original', results.get('original', {}))] + list(results['methods'].items())
  def shown(key):  # optional columns only when they say something
    if key == 'grad_cosine':
      return any(key in stats for _, stats in rows)
    if key == 'skipped_steps':
      return any(stats.get(key, {}).get('mean', 0) > 0 for _, stats in rows)
    return True
  columns = [(k, t) for k, t in TABLE_COLUMNS if shown(k)]
  header = ['method'] + [title for _, title in columns]
  digits = {'KL': 3, 'grad_cosine': 3, 'skipped_steps': 1}
  body = [[name] + [_cell(stats.get(key), digits.get(key, 2)) for key, _ in columns]
          for name, stats in rows]
  title = (f"{results['dataset']}  scenario {results['scenario']}  seeds "
           f"{','.join(map(str, results['seeds']))}  (percent; Avg.Gap vs Retrain)")
  failed = [f'{name} failed on seed {seed} (mean and std over the other seeds)'
            for name, seeds in results.get('failures', {}).items() for seed in seeds]
  return text_table(title, header, body, failed)


def _method_colors(results: dict) -> dict:
  """One colour per method of ``results``, the same in every plot of a run (tab10, or
  tab20 beyond ten methods, so that no two methods share one)."""
  import matplotlib.pyplot as plt
  names = list(results['methods'])
  palette = plt.get_cmap('tab10' if len(names) <= 10 else 'tab20')
  return {name: palette(i % palette.N) for i, name in enumerate(names)}


def plot_results(results: dict, path: str | Path) -> None:
  """Grouped bars of UA/RA/TA/MIA per method (Retrain's level dashed) and Avg. Gap bars."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  names = [n for n, stats in results['methods'].items()  # not those that failed every seed
           if all(m in stats for m in (*BAR_METRICS, 'avg_gap'))]
  fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(11, 4.2),
                                   gridspec_kw={'width_ratios': [3.2, 1]})
  width = 0.8 / max(len(names), 1)
  color = _method_colors(results)
  x = np.arange(len(BAR_METRICS))
  retrain = results['methods'].get('retrain')
  for i, name in enumerate(names):
    stats = results['methods'][name]
    means = [stats[m]['mean'] for m in BAR_METRICS]
    stds = [stats[m]['std'] for m in BAR_METRICS]
    is_ref = name == 'retrain'
    ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
           label=name + (' (gold standard)' if is_ref else ''),
           color='0.25' if is_ref else color[name], hatch='//' if is_ref else None,
           edgecolor='white' if is_ref else None)
  if retrain is not None:
    for j, m in enumerate(BAR_METRICS):
      ax.hlines(retrain[m]['mean'], j - 0.45, j + 0.45, colors='k', linestyles='--', lw=1)
  ax.set_xticks(x, ['UA (forget)', 'RA (retain)', 'TA (test)', 'MIA-Efficacy'])
  ax.set_ylabel('percent')
  ax.set_ylim(0, 105)
  ax.legend(fontsize=8, ncol=min(len(names), 4), loc='upper center', bbox_to_anchor=(0.5, -0.1),
            frameon=False)
  ax.set_title(f"{results['dataset']} · {results['scenario']} · "
               f"{len(results['seeds'])} seed(s) · dashed = Retrain")
  others = [n for n in names if n != 'retrain']
  gaps = [results['methods'][n]['avg_gap']['mean'] for n in others]
  gap_std = [results['methods'][n]['avg_gap']['std'] for n in others]
  ax_gap.barh(others, gaps, xerr=gap_std, capsize=2,
              color=[color[n] for n in others])
  for y, (g, e) in enumerate(zip(gaps, gap_std)):
    ax_gap.text(g + e, y, f' {g:.2f}', va='center', fontsize=8)
  ax_gap.set_xlim(0, max(gaps + [1.0]) * 1.25)
  ax_gap.invert_yaxis()
  ax_gap.set_xlabel('Avg. Gap to Retrain (lower is better)')
  ax_gap.set_title('Avg. Gap')
  fig.tight_layout()
  save_figure(fig, path, dpi=130)
  plt.close(fig)


def plot_alignment(results: dict, path: str | Path) -> None:
  """Cosine between forget and retain gradients over optimizer updates, one line per
  method (mean over seeds, band = min..max), from ``results['alignment']``."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  fig, ax = plt.subplots(figsize=(9.5, 4.2))  # the legend to the right of the curves
  colors = _method_colors(results)
  for name, curves in results['alignment'].items():
    color = colors[name]
    length = min(len(s) for s in curves['steps'])
    steps = np.asarray(curves['steps'][0][:length])
    cos = np.asarray([c[:length] for c in curves['cosine']])
    mean = results['methods'][name].get('grad_cosine', {}).get('mean', float('nan'))
    ax.plot(steps, cos.mean(0), color=color, lw=1.6, label=f'{name} (mean {mean:+.3f})')
    if len(cos) > 1:
      ax.fill_between(steps, cos.min(0), cos.max(0), color=color, alpha=0.18, lw=0)
  ax.axhline(0.0, color='k', lw=0.8, ls='--')
  ax.set_xlabel('optimizer updates (0 = original model)')
  ax.set_ylabel('cos(grad forget loss, grad retain loss)')
  ax.set_title(f"{results['dataset']} · {results['scenario']} · {len(results['seeds'])} seed(s)"
               ' · probe batches, expected random-label CE vs CE', fontsize=9)
  ax.legend(fontsize=8, frameon=False, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  save_figure(fig, path, dpi=130)
  plt.close(fig)


STRONG_COLUMNS = (('forget_quality', 'F (chal.)', 3), ('challenge_score', 'score', 3),
                  ('ulira_auc', 'U-LiRA AUC', 3), ('ulira_accuracy', 'U-LiRA acc', 3),
                  ('ulira_tpr_at_1pct_fpr', 'TPR@1%', 3), ('UA', 'UA', 1), ('RA', 'RA', 1),
                  ('TA', 'TA', 1), ('MIA', 'MIA(SVC)', 1), ('rte_s_per_model', 's/model', 1))


def format_strong_table(results: dict) -> str:
  """The many-model evaluation as text: one row per method, Retrain first."""
  header = ['method'] + [t for _, t, _ in STRONG_COLUMNS]
  body = []
  for name, row in results['methods'].items():
    cells = [name]
    for key, _, digits in STRONG_COLUMNS:
      value = row.get(key)
      if isinstance(value, dict):
        cells.append(_cell(value, digits))
      else:
        cells.append('-' if value is None else f'{value:.{digits}f}')
    body.append(cells)
  title = (f"{results['dataset']}  scenario {results['scenario']}  {results['models']} "
           f"models per kind, |D_f| = {results['forget_size']}  (F, score: 1 = like Retrain; "
           'AUC, acc: 0.5 = like Retrain; UA/RA/TA/MIA mean ± std over models)')
  return text_table(title, header, body)


def plot_strong(results: dict, path: str | Path) -> None:
  """Per-example distributions (challenge epsilon, U-LiRA accuracy) per method, and the
  aggregate scores next to the single-model SVC MIA."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  names = list(results['per_example'])
  fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={'width_ratios': [1.2, 1.2, 1]})
  palette = plt.get_cmap('tab10')
  for ax, key, label, ref in ((axes[0], 'epsilon', 'per-example epsilon (challenge)', 0.0),
                              (axes[1], 'ulira_accuracy', 'per-example U-LiRA accuracy', 0.5)):
    data = [np.asarray(results['per_example'][n][key]) for n in names]
    if names:
      parts = ax.violinplot(data, showmedians=True, widths=0.8)
      for i, body in enumerate(parts['bodies']):
        body.set_facecolor(palette(i % 10))
        body.set_alpha(0.6)
      rng = np.random.default_rng(0)
      for i, d in enumerate(data):
        ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, s=4, color='k', alpha=0.3)
    ax.axhline(ref, color='k', ls='--', lw=1)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30)
    ax.set_ylabel(label)
    ax.set_title(f'{label.split(" (")[0]} (dashed: Retrain-like)', fontsize=10)
  x = np.arange(len(names))
  bars = (('forget_quality', 'challenge F'), ('ulira_auc', 'U-LiRA AUC'),
          ('MIA', 'SVC MIA / 100'))
  width = 0.8 / len(bars)
  for j, (key, label) in enumerate(bars):
    values = [results['methods'][n][key]['mean'] / 100 if key == 'MIA'
              else results['methods'][n][key] for n in names]
    axes[2].bar(x + (j - 1) * width, values, width, label=label)
  if 'retrain' in results['methods']:
    axes[2].axhline(results['methods']['retrain']['MIA']['mean'] / 100, color='C2', ls=':',
                    lw=1, label="Retrain's SVC MIA")
  axes[2].set_xticks(x, names, rotation=30)
  axes[2].set_ylim(0, 1.05)
  axes[2].legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=2,
                 frameon=False)
  axes[2].set_title('F: 1 best · AUC: 0.5 best', fontsize=10)
  fig.suptitle(f"{results['dataset']} · {results['scenario']} · {results['models']} unlearned "
               f"vs {results['models']} retrained models per method")
  fig.tight_layout()
  save_figure(fig, path, dpi=130)
  plt.close(fig)
