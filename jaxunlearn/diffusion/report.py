"""Human-facing output of the generation job: table, bars, forgetting curves, samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxunlearn.checkpoint import save_figure
from jaxunlearn.report import _cell, text_table

COLUMNS = (('UA', 'UA', 1), ('FID_forget', 'FID forget', 1), ('FID', 'FID', 2),
           ('acc_remaining', 'acc rest', 1),
           ('steps_to_forget', 'iters to UA>=95', 0), ('rte_s', 'RTE s', 1),
           ('skipped_steps', 'skipped', 0))


def _kind(results) -> str:
  """What the title calls the model: a text-to-image one (judged on held-out captions), a
  class-conditional DiT, or a class-conditional DDPM (UNet)."""
  name = results.get('model', {}).get('name', '')
  if name.startswith('UNet2DCondition'):
    return 'text-to-image (held-out captions)'
  return 'DiT' if name.startswith('DiT') else 'DDPM'


def format_generation_table(results: dict) -> str:
  """One row per model (the original first), mean ± std over seeds."""
  rows = [('original', results['original'])] + list(results['methods'].items())
  n_seeds = len(results['seeds'])
  header = ['method'] + [title for _, title, _ in COLUMNS]
  body = []
  for name, stats in rows:
    cells = [name]
    for key, _, digits in COLUMNS:
      cell = _cell(stats.get(key), digits)
      if key == 'steps_to_forget' and name != 'original':
        got = stats.get('forgotten_runs', 0)
        cell = cell if got == n_seeds else f'{cell} ({got}/{n_seeds} seeds)' if got else 'never'
      cells.append(cell)
    body.append(cells)
  features = results.get('evaluation', {}).get('fid_features', 'classifier')
  title = (f"{results['dataset']} {_kind(results)}  forget class {results['forget_class']}"
           f"  seeds {','.join(map(str, results['seeds']))}  (UA, acc: percent; FID on {features} "
           'features of the remaining classes; FID forget: of the forgotten class\'s '
           'samples to its real images, higher = less like it)')
  failed = [f'{name} failed on seed {seed}' for name, seeds in
            results.get('failures', {}).items() for seed in seeds]
  return text_table(title, header, body, failed)


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_generation(results: dict, path: str | Path) -> None:
  """Bars: UA and acc_remaining (percent) per model, and FID (lower is better)."""
  plt = _plt()
  names = ['original'] + [n for n, s in results['methods'].items() if 'UA' in s]
  stats = {'original': results['original'], **results['methods']}
  fig, (ax, ax_fid) = plt.subplots(1, 2, figsize=(11, 4.2),
                                   gridspec_kw={'width_ratios': [2.2, 1]})
  palette = plt.get_cmap('tab10')
  x = np.arange(2)
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    s = stats[name]
    ax.bar(x + (i - (len(names) - 1) / 2) * width, [s['UA']['mean'], s['acc_remaining']['mean']],
           width, yerr=[s['UA']['std'], s['acc_remaining']['std']], capsize=2, label=name,
           color='0.3' if name == 'original' else palette(i % 10))
  ax.axhline(95, color='k', ls='--', lw=0.8)
  ax.set_xticks(x, [f"UA: class {results['forget_class']} not generated",
                    'accuracy on the other classes'])
  ax.set_ylim(0, 105)
  ax.set_ylabel('percent (classifier on samples)')
  ax.legend(fontsize=8, ncol=min(len(names), 6), loc='upper center',
            bbox_to_anchor=(0.5, -0.1), frameon=False)
  ax.set_title(f"{results['dataset']} {_kind(results)} · forget class "
               f"{results['forget_class']} · {len(results['seeds'])} seed(s) · dashed = UA 95")
  fids = [stats[n]['FID']['mean'] for n in names]
  ax_fid.barh(names, fids, xerr=[stats[n]['FID']['std'] for n in names], capsize=2,
              color=['0.3' if n == 'original' else palette(i % 10) for i, n in enumerate(names)])
  for y, f in enumerate(fids):
    ax_fid.text(f, y, f' {f:.2f}', va='center', fontsize=8)
  ax_fid.set_xlim(0, max(fids + [1e-3]) * 1.3)
  ax_fid.invert_yaxis()
  ax_fid.set_xlabel('FID of the remaining classes (lower is better)')
  fig.tight_layout()
  save_figure(fig, path, dpi=130)
  plt.close(fig)


def plot_forgetting(results: dict, path: str | Path) -> None:
  """The forgotten class over unlearning iterations, one line per method and seed: UA (left)
  and FID_forget, its samples' distance to its real images (right; a classifier can call
  degenerate samples that class, this distance cannot)."""
  plt = _plt()
  fig, (ax, ax_fid) = plt.subplots(1, 2, figsize=(12, 4.2))
  palette = plt.get_cmap('tab10')
  names = ['original'] + list(results['methods'])
  for name, rows in results['per_seed'].items():
    color = palette(names.index(name) % 10)
    for j, row in enumerate(r for r in rows if 'curve' in r):
      curve = row['curve']
      steps = row.get('steps_to_forget')
      label = None if j else f"{name} ({'never' if steps is None else f'{steps} iters'})"
      ax.plot(curve['iterations'], curve['UA'], marker='.', color=color, lw=1.4, label=label)
      points = [(i, f) for i, f in zip(curve['iterations'], curve.get('FID_forget', []))
                if f is not None]
      if points:
        ax_fid.plot(*zip(*points), marker='.', color=color, lw=1.4)
  ax.axhline(95, color='k', ls='--', lw=0.8)
  ax.set_ylim(-2, 102)
  ax.set_ylabel(f"UA on class {results['forget_class']} (percent)")
  ax.set_title('How fast each method forgets · dashed = UA 95 (forgotten)', fontsize=10)
  ax.legend(fontsize=8, frameon=False)
  ax_fid.set_ylabel(f"FID forget: class {results['forget_class']}'s samples to its real images")
  ax_fid.set_title('Are its samples still like the class? (higher: less)', fontsize=10)
  for a in (ax, ax_fid):
    a.set_xscale('symlog', linthresh=10)
    a.set_xlabel('unlearning iterations (SFR-on: one forget + one retain step each)')
  fig.tight_layout()
  save_figure(fig, path, dpi=130)
  plt.close(fig)


def plot_samples(grids: dict, forget_class: int, path: str | Path, per_row: int = 8) -> None:
  """One panel per model: a row of ``per_row`` samples per class (``[classes * per_row, H,
  W, C]`` in [-1, 1]; grey ink on white for one channel, colour for three), the forgotten
  class's row boxed in red."""
  plt = _plt()
  from matplotlib.patches import Rectangle
  names = list(grids)
  fig, axes = plt.subplots(1, len(names), figsize=(2.3 * len(names), 3.0), squeeze=False)
  for ax, name in zip(axes[0], names):
    images = np.asarray(grids[name])
    n, h, w, c = images.shape
    classes = n // per_row
    grid = images[:classes * per_row].reshape(classes, per_row, h, w, c)
    grid = (np.clip(grid.transpose(0, 2, 1, 3, 4).reshape(classes * h, per_row * w, c), -1, 1)
            + 1) / 2
    if c == 1:
      ax.imshow(grid[..., 0], cmap='gray_r', vmin=0, vmax=1, interpolation='nearest')
    else:
      ax.imshow(grid[..., :3], interpolation='nearest')
    ax.add_patch(Rectangle((-0.5, forget_class * h - 0.5), per_row * w, h, fill=False,
                           edgecolor='red', lw=1.5))
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([(k + 0.5) * h for k in range(classes)], [str(k) for k in range(classes)],
                  fontsize=6)
  fig.tight_layout()
  save_figure(fig, path, dpi=150)
  plt.close(fig)
