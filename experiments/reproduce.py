"""Every published result from one command, with its provenance.

    python experiments/reproduce.py --list              # the results and their state
    python experiments/reproduce.py --only NAME [...]   # re-measure: run, store, render
    python experiments/reproduce.py --render            # docs tables from the stored JSON
    python experiments/reproduce.py --check             # exit 1 if anything is stale

Each result NAME is one ``jaxunlearn`` command (``RESULTS`` below). ``--only NAME`` runs it
into ``experiments/results/NAME/`` (results.json with its ``provenance``, the plots, and
``COMMAND``: the exact command line, run from the repository root), then renders its table
into the docs: a table lives between ``<!-- result:NAME -->`` and ``<!-- /result:NAME -->``
in a docs file and is written from the JSON, never typed. A run goes into ``experiments/results/.NAME.partial/``
first and replaces the stored result only when it has finished (the same command started
again after a kill resumes it there).

A **benchmark** (``Result.script``: step times, memory, collectives) is one script of
``experiments/`` writing ``--json NAME/results.json`` with its provenance; its table is a
markdown table rendered the same way. Its numbers are this host's times and sizes, so it is
not resolved against today's defaults; ``--check`` checks that it was made by the
registered command (arguments and environment).

``--check`` (and ``tests/test_reproduce.py``) says which results no longer match the code:
for each, the command recorded in its provenance is resolved with today's code
(:func:`jaxunlearn.cli.resolve_run`: the full config and every method's hyperparameters,
no compute) and compared with what the result records; a changed default names the
setting, its stored and its current value. A change of code can also move a trained
original while every setting stays: results record each original's settings key and a
fingerprint of its weights (``original_models``), and a result whose original differs from
that of a later result with the same key and seed is stale too, and so is one whose stored
``COMMAND`` is not the registry's. A result measured before results recorded their
provenance, or under settings kept on purpose, is marked ``historical`` with the reason, and
is listed as such, not checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / 'experiments' / 'results'

FIDELITY = ('retrain,ft,ga,rl,salun,salun_joint,l1_sparse,iu,bs,be,scrub,bad_teacher,sfron,'
            'sfron_hvp,lur')
T2I_BEFORE = ("measured before ESD was given the concept alone ('three', '3'): it was given "
              'every caption of the digit; 1000 iterations were the default')
T2I_RECIPE_BEFORE = ('measured when 1000 iterations were the default (before T2I_RECIPE), '
                     'so recorded without the --set of the steps')
DDPM_ORIGINALS_BEFORE = ('measured on the digits DDPMs that the code of 2026-12-04 trained '
                         '(seed 0: UA 14, acc rest 87.6); the same settings train others '
                         'since (seed 0: UA 21, acc rest 88.7), those of generation_digits')
# the step benchmarks at the papers' CIFAR size (ResNet-18 width 64, 32x32 images)
W64 = ('--width', '64', '--image-size', '32', '--batch', '64', '--steps', '3', '--repeats', '3')
SFRON_T2I_ASCENT = ("measured with SFR-on's DDPM losses (gradient ascent), the job's default "
                    "before it took SFR-on's Stable Diffusion code's; recorded without "
                    '--set of them')


@dataclasses.dataclass(frozen=True)
class Result:
  argv: tuple                    # the jaxunlearn command's arguments, without --out
  docs: tuple = ()               # docs files holding its <!-- result:NAME --> table
  table: str = 'classification'  # its table: 'classification', 'generation', 'strong', ...
  #                                (render_table's kinds)
  historical: str = ''           # non-empty: why it is not checked against today's defaults
  measured: str = ''             # a historical result: when and under what it was measured
  pending: str = ''              # non-empty: registered, not measured yet (why it is listed)
  # a benchmark: this script of experiments/ runs argv and writes --json results.json
  script: str = ''
  env: tuple = ()                # (NAME, VALUE), ...: the environment the script runs in
  label: str = ''                # its column title where another benchmark's table shows it
  beside: tuple = ()             # benchmarks whose columns its table shows before its own
  # a study script: the `jaxunlearn run` arguments whose resolved hyperparameters it records
  # under `hparams` (checked against today's like a run's), and whether it takes the run's
  # --cache-dir of originals (which changes no number: the cache is keyed by the settings)
  hparams_of: tuple = ()
  takes_cache: bool = False


RESULTS = {
    'fidelity_class3': Result(
        ('run', '--scenario', 'class:3', '--seeds', '0,1,2', '--methods', FIDELITY),
        docs=('docs/results-classification.md',)),
    'fidelity_random10': Result(
        ('run', '--scenario', 'random:10', '--seeds', '0,1,2', '--methods', FIDELITY),
        docs=('docs/results-classification.md',)),
    'baselines_class3': Result(
        ('run', '--scenario', 'class:3', '--seeds', '0,1,2', '--methods',
         'retrain,ga_l1,fisher,scissorhands', '--alignment-every', '0'),
        docs=('docs/baselines.md',)),
    'baselines_random10': Result(
        ('run', '--scenario', 'random:10', '--seeds', '0,1,2', '--methods',
         'retrain,ga_l1,fisher,scissorhands', '--alignment-every', '0'),
        docs=('docs/baselines.md',)),
    'lur_class3': Result(
        ('run', '--methods', 'retrain,rl,salun,lur', '--seeds', '0,1,2', '--alignment-every',
         '1'),
        docs=('docs/results-classification.md',)),
    'lur_random10': Result(
        ('run', '--scenario', 'random:10', '--methods', 'retrain,rl,salun,lur', '--seeds',
         '0,1,2', '--alignment-every', '1'),
        docs=('docs/results-classification.md',)),
    # LUR's variants (docs/lur.md: one summary table, SUMMARIES below)
    **{f'lur_{variant}_{scenario}': Result(
        ('run', '--scenario', scenario.replace('class3', 'class:3').replace('random10',
                                                                            'random:10'),
         '--methods', 'retrain,lur', '--seeds', '0,1,2', '--alignment-every', '0',
         *(('--set', 'lur.forget_loss=ga') if variant.startswith('ga') else ()),
         *(('--set', 'lur.reinit=true') if variant.endswith('re') else ())))
       for variant in ('rl', 'ga', 'rlre', 'gare') for scenario in ('class3', 'random10')},
    # steps to forget under the references' own recipes (docs/reference-ddpm.md); SFR-on's
    # DiT code on the DiT is generation_digits_dit's sfron (the DiT's default)
    'ref_dit_sfron_ddpm_recipe': Result(
        ('run', '--task', 'generation', '--model', 'dit', '--methods', 'sfron', '--seeds',
         '0,1,2', '--check-every', '10',
         *(a for kv in ('iterations=150', 'loss=ddpm', 'forget_loss=adaptive',
                        'forget_weight=10', 'forget_schedule=cosine', 'retain_clip=true',
                        'fisher_batch_size=0', 'fisher_clip=true', 'fisher_examples=0')
           for a in ('--set', f'sfron.{kv}'))),
        docs=('docs/reference-ddpm.md',), table='generation'),
    'ref_unet_sfron_salun': Result(
        ('run', '--task', 'generation', '--model', 'ref-unet', '--methods', 'sfron,salun',
         '--seeds', '0', '--check-every', '10'),
        docs=('docs/reference-ddpm.md',), table='generation'),
    # replacing tables measured before the ResNet padding fix whose JSON was not kept
    'tuned_random10': Result(
        ('run', '--scenario', 'random:10', '--methods', 'retrain,ft,ga,rl,salun', '--seeds',
         '0,1,2', '--tune', '--tune-grid', '0.1,0.25,0.5,1,2,4'),
        docs=('docs/results-classification.md',)),
    'tuned_class3': Result(
        ('run', '--methods', 'retrain,iu,bs,be,scrub,ga', '--seeds', '0,1,2', '--tune',
         '--tune-grid', '0.01,0.1,0.25,1,4,10'),
        docs=('docs/results-classification.md',)),
    'lur_light_random10': Result(
        ('run', '--scenario', 'random:10', '--methods', 'retrain,rl,salun,lur', '--seeds',
         '0,1,2', '--set', 'lur.forget_weight=0.05'),
        docs=('docs/results-classification.md',)),
    # the default run (README's first command) and its two scenarios over three seeds
    'default_run': Result(('run',), docs=('docs/running.md',)),
    'digits_class3': Result(('run', '--seeds', '0,1,2'), docs=('docs/running.md',)),
    'digits_random10': Result(('run', '--scenario', 'random:10', '--seeds', '0,1,2'),
                              docs=('docs/running.md',)),
    'generation_digits': Result(
        ('run', '--task', 'generation', '--scenario', 'class:3', '--seeds', '0,1,2',
         '--check-every', '10'),
        docs=('docs/generation.md',), table='generation'),
    'generation_digits_dit': Result(
        ('run', '--task', 'generation', '--model', 'dit', '--scenario', 'class:3',
         '--methods', 'salun,sfron,lur,sa,ga', '--seeds', '0,1,2', '--check-every', '10'),
        docs=('docs/generation.md',), table='generation'),
    'generation_digits_sfron': Result(
        ('run', '--task', 'generation', '--dataset', 'digits', '--scenario', 'class:3',
         '--methods', 'sfron', '--seeds', '0,1,2', '--check-every', '10'),
        docs=('docs/generation.md',), table='generation',
        historical=DDPM_ORIGINALS_BEFORE),
    'generation_digits_sfron_lr5e-5': Result(
        ('run', '--task', 'generation', '--dataset', 'digits', '--scenario', 'class:3',
         '--methods', 'sfron', '--seeds', '0,1,2', '--check-every', '10', '--set',
         'sfron.lr=5e-5'),
        docs=('docs/generation.md',), table='generation',
        historical=DDPM_ORIGINALS_BEFORE),
    'generation_digits_sfron_lr7e-5': Result(
        ('run', '--task', 'generation', '--dataset', 'digits', '--scenario', 'class:3',
         '--methods', 'sfron', '--seeds', '0,1,2', '--check-every', '10', '--set',
         'sfron.lr=7e-5'),
        docs=('docs/generation.md',), table='generation',
        historical=DDPM_ORIGINALS_BEFORE),
    'generation_digits_salun': Result(
        ('run', '--task', 'generation', '--dataset', 'digits', '--scenario', 'class:3',
         '--methods', 'salun', '--seeds', '0,1,2', '--check-every', '50'),
        docs=('docs/generation.md',), table='generation',
        historical=DDPM_ORIGINALS_BEFORE),
    # SFR-on with a stricter Fisher-ratio mask (docs/generation.md: the summary
    # sfron_digits_gamma_seeds)
    **{f'generation_digits_sfron_gamma{name}': Result(
        ('run', '--task', 'generation', '--dataset', 'digits', '--scenario', 'class:3',
         '--methods', 'sfron', '--seeds', '0,1,2', '--check-every', '10', '--set',
         f'sfron.gamma={gamma}', *sets), table='generation')
       for name, gamma, sets in (('2', 2, ()), ('5', 5, ()),
                                 ('5_300', 5, ('--set', 'sfron.iterations=300')))},
    # the digits text-to-image job (docs/stable-diffusion.md), its methods' defaults
    'text_to_image_digits': Result(
        ('run', '--task', 'text-to-image', '--scenario', 'class:3', '--seeds', '0,1,2',
         '--check-every', '10'),
        docs=('README.md', 'docs/stable-diffusion.md'), table='generation'),
    # ESD's settings on the digits text-to-image model, seed 0 (a summary in
    # docs/stable-diffusion.md)
    **{f'esd_t2i_{name}': Result(
        ('run', '--task', 'text-to-image', '--scenario', 'class:3', '--methods', 'esd',
         '--seeds', '0', '--check-every', '50', *sets), table='generation', historical=why)
       for name, sets, why in (
           ('xattn', ('--set', 'esd.train_method=xattn', '--set', 'esd.steps=1000'), T2I_BEFORE),
           ('xattn_lr1e-4', ('--set', 'esd.train_method=xattn', '--set', 'esd.lr=1e-4', '--set',
                             'esd.steps=1000'), T2I_BEFORE),
           ('concept_1000', ('--set', 'esd.steps=1000'), T2I_RECIPE_BEFORE),
           ('concept_lr5e-6', ('--set', 'esd.lr=5e-6', '--set', 'esd.steps=1000'),
            T2I_RECIPE_BEFORE),
           ('concept_600', ('--set', 'esd.steps=600'), ''))},
    # ESD at half the rate for twice the iterations, three seeds (docs/stable-diffusion.md:
    # per seed in the summary text_to_image_digits_seeds)
    'esd_t2i_seeds_lr5e-6_1200': Result(
        ('run', '--task', 'text-to-image', '--scenario', 'class:3', '--methods', 'esd',
         '--seeds', '0,1,2', '--check-every', '100', '--set', 'esd.lr=5e-6', '--set',
         'esd.steps=1200'),
        docs=('docs/stable-diffusion.md',), table='generation'),
    # SFR-on's settings on the digits text-to-image model, seed 0 (docs/stable-diffusion.md)
    **{f'sfron_t2i_{name}': Result(
        ('run', '--task', 'text-to-image', '--scenario', 'class:3', '--methods', 'sfron',
         '--seeds', '0', '--check-every', '10', *sets), table='generation', historical=why)
       for name, sets, why in (
           ('sd', ('--set', 'sfron.forget_loss=remap', '--set', 'sfron.loss=mean', '--set',
                   'sfron.forget_weight=1', '--set', 'sfron.forget_schedule=constant'), ''),
           *((name, sets, SFRON_T2I_ASCENT) for name, sets in (
               ('150', ()),
               ('150_lr2e-5', ('--set', 'sfron.lr=2e-5')),
               ('150_every3', ('--set', 'sfron.every=3')),
               ('80', ('--set', 'sfron.iterations=80')),
               ('80_fw1', ('--set', 'sfron.iterations=80', '--set', 'sfron.forget_weight=1')),
               ('80_nodrop', ('--set', 'sfron.iterations=80', '--set',
                              'sfron.forget_cond_drop_prob=0')),
               ('80_lr5e-5', ('--set', 'sfron.iterations=80', '--set', 'sfron.lr=5e-5')),
               ('40', ('--set', 'sfron.iterations=40')))))},
    # benchmarks (markdown tables; the times and sizes of the host that ran them)
    'bench_cpu_xla_conv': Result(
        ('--no-diffusion',), script='bench.py', env=(('JAXUNLEARN_CPU_CONV', 'xla'),),
        label='xla', table='steps'),
    'bench_cpu': Result(
        ('--no-diffusion',), script='bench.py', label='auto', beside=('bench_cpu_xla_conv',),
        docs=('docs/results-classification.md',), table='steps'),
    # SFR-on's and LUR's steps against plain SGD (docs/results-classification.md)
    # (each at width 16 on 16x16 digits, and beside it at the papers' CIFAR size: width 64 on
    # 32x32, batch 64, fewer calls: one of its SFR-on HVP steps takes about 20 s here)
    'bench_sfron_step': Result((), script='bench_sfron_step.py', table='ratios'),
    'bench_sfron_step_w64': Result(
        W64, script='bench_sfron_step.py', beside=('bench_sfron_step',),
        docs=('docs/results-classification.md',), table='ratios'),
    'bench_lur_step': Result((), script='bench_lur_step.py', table='ratios'),
    'bench_lur_step_w64': Result(
        W64, script='bench_lur_step.py', beside=('bench_lur_step',),
        docs=('docs/results-classification.md',), table='ratios'),
    # one device against the batch split over 8 fake ones (docs/running.md)
    'bench_parallel': Result(
        ('--steps', '3', '--repeats', '3'), script='bench_parallel.py',
        env=(('XLA_FLAGS', '--xla_force_host_platform_device_count=8'),),
        docs=('docs/running.md',), table='ratios'),
    'bench_sd_memory': Result(
        (), script='bench_sd_memory.py', docs=('docs/stable-diffusion.md',), table='sd_memory'),
    'probe_xla_flags': Result(
        (), script='probe_xla_flags.py', docs=('docs/running.md',), table='flags'),
    'bench_dit_memory': Result(
        ('--docs-table',), script='bench_dit_memory.py', docs=('docs/generation.md',),
        table='dit_memory'),
    'collectives': Result(
        (), script='collectives.py', env=(('XLA_FLAGS',
                                           '--xla_force_host_platform_device_count=8'),),
        docs=('docs/running.md',), table='collectives'),
    # how selective SFR-on's Fisher-ratio mask is on the digits DDPMs (docs/generation.md)
    'sfron_mask_digits': Result(
        ('--seeds', '0,1,2'), script='sfron_mask.py', table='mask', takes_cache=True,
        hparams_of=('run', '--task', 'generation', '--methods', 'sfron'),
        docs=('docs/generation.md',)),
    # how many updates each classification method needs to forget class 3
    # (docs/results-classification.md)
    'steps_sfron_class3': Result(
        ('--seeds', '0,1,2'), script='study_sfron_steps.py', table='reach', takes_cache=True,
        hparams_of=('run', '--methods', 'sfron,sfron_hvp,salun,ga'),
        docs=('docs/results-classification.md',)),
    # the digits DiT's original along its training, raw and averaged (docs/generation.md)
    'dit_training_digits': Result(
        ('--seeds', '0,1,2', '--every', '1500'), script='dit_training.py', table='training',
        takes_cache=True, hparams_of=('run', '--task', 'generation', '--model', 'dit',
                                      '--methods', 'ga'),
        docs=('docs/generation.md',)),
    'strong_class3': Result(
        ('eval-strong', '--dataset', 'digits', '--scenario', 'class:3', '--methods',
         'original,ft,ga,salun,sfron,lur', '--models', '8'),
        docs=('docs/strong-evaluation.md',), table='strong'),
    'strong_random10': Result(
        ('eval-strong', '--dataset', 'digits', '--scenario', 'random:10', '--methods',
         'original,ft,ga,salun,sfron,lur', '--models', '8'),
        docs=('docs/strong-evaluation.md',), table='strong'),
}


@dataclasses.dataclass(frozen=True)
class Summary:
  """A docs table that puts one method's numbers from several results side by side: a
  markdown table, one cell per (row, column) result, rendered from their JSON like any
  result's table (between ``<!-- result:NAME -->`` markers)."""
  method: str                    # whose numbers each cell shows
  columns: tuple                 # column titles (after the row title's)
  # (row title, (result per column, ...)), ...; a result is its name, or (name, method) for
  # another method's numbers than ``method``'s ('original': the original's)
  rows: tuple
  docs: tuple = ()
  corner: str = ''               # the row titles' column title
  cell: str = 'variant'          # what a result's numbers fill its cell(s) with (CELLS)

  def results(self) -> list[str]:
    """The names of the results it shows."""
    return [r if isinstance(r, str) else r[0] for _, row in self.rows for r in row]


def _variant_cell(results: dict, method: str) -> str:
  stats = results['methods'][method]
  mean = lambda key: f"{stats[key]['mean']:.2f}"
  return (f"{mean('UA')} / {mean('RA')} / {mean('TA')} / **{mean('avg_gap')}** ± "
          f"{stats['avg_gap']['std']:.2f}")


def _forgetting_cells(results: dict, method: str) -> str:
  """A generation result's UA, iterations to forget, acc_remaining and FID: four cells."""
  stats = results['methods'][method]
  steps = stats.get('steps_to_forget')
  return ' | '.join([f"{stats['UA']['mean']:.1f}",
                     'never' if steps is None else f"{steps['mean']:.0f}",
                     f"{stats['acc_remaining']['mean']:.1f}", f"{stats['FID']['mean']:.1f}"])


def _seed_cells(results: dict, method: str) -> str:
  """A generation result's UA / acc_remaining at the end, one cell per seed (the original's
  from ``original_per_seed``, which runs record since 2026-12-05)."""
  if method == 'original':
    if 'original_per_seed' not in results:
      raise ValueError("a per-seed row of the original needs a result that recorded "
                       "'original_per_seed' (measured since 2026-12-05)")
    rows = results['original_per_seed']
  else:
    rows = results['per_seed'][method]
  return ' | '.join(f"{r['UA']:.0f} / {r['acc_remaining']:.1f}" for r in rows)


# a summary's cells: classification's 'UA / RA / TA / Avg. Gap' in one cell; a generation
# run's UA | forgotten at | acc_remaining | FID in four; or its UA / acc_remaining per seed
CELLS = {'variant': _variant_cell, 'forgetting': _forgetting_cells, 'seeds': _seed_cells}


SUMMARIES = {
    'lur_variants': Summary(
        'lur', ('class:3 UA / RA / TA / Avg. Gap', 'random:10 UA / RA / TA / Avg. Gap'),
        (('random labels (default)', ('lur_rl_class3', 'lur_rl_random10')),
         ('gradient ascent (`forget_loss=ga`)', ('lur_ga_class3', 'lur_ga_random10')),
         ('random labels + SNIP re-init (`reinit=true`)', ('lur_rlre_class3',
                                                          'lur_rlre_random10')),
         ('gradient ascent + SNIP re-init', ('lur_gare_class3', 'lur_gare_random10'))),
        docs=('docs/lur.md',), corner='variant'),
    'esd_digits_t2i': Summary(
        'esd', ('UA (held-out)', 'forgotten at', 'acc_remaining', 'FID'),
        (('every caption, `xattn`, 1000 iterations', ('esd_t2i_xattn',)),
         ('every caption, `xattn`, lr 1e-4, 1000', ('esd_t2i_xattn_lr1e-4',)),
         ('"three" and "3", 1000 iterations', ('esd_t2i_concept_1000',)),
         ('"three" and "3", lr 5e-6, 1000', ('esd_t2i_concept_lr5e-6',)),
         ('**"three" and "3", 600 iterations (the default)**', ('esd_t2i_concept_600',))),
        docs=('docs/stable-diffusion.md',), corner='ESD (seed 0)', cell='forgetting'),
    'sfron_digits_t2i': Summary(
        'sfron', ('UA (held-out)', 'forgotten at', 'acc_remaining', 'FID'),
        (('ascent (DDPM code), 150 iterations', ('sfron_t2i_150',)),
         ('ascent, 150, lr 2e-5', ('sfron_t2i_150_lr2e-5',)),
         ('ascent, 150, a forget step every 3rd iteration (K = 3)',
          ('sfron_t2i_150_every3',)),
         ('ascent, 80 iterations', ('sfron_t2i_80',)),
         ('ascent, 80, forget weight 1 (not 10)', ('sfron_t2i_80_fw1',)),
         ('ascent, 80, no prompt dropout in the forget loss', ('sfron_t2i_80_nodrop',)),
         ('ascent, 80, lr 5e-5', ('sfron_t2i_80_lr5e-5',)),
         ('ascent, 40 iterations', ('sfron_t2i_40',)),
         ('**pseudo prompt (SD code), 80 iterations (the default)**', ('sfron_t2i_sd',))),
        docs=('docs/stable-diffusion.md',), corner='SFR-on (seed 0)', cell='forgetting'),
    # SFR-on on the digits DDPMs per seed at several Fisher-ratio thresholds (the same
    # originals: generation_digits and the gamma runs share their cache keys)
    'sfron_digits_gamma_seeds': Summary(
        '', ('seed 0', 'seed 1', 'seed 2'),
        (('original', (('generation_digits', 'original'),)),
         ("**γ = 1, 150 iterations (the references')**", (('generation_digits', 'sfron'),)),
         ('γ = 2, 150 iterations', (('generation_digits_sfron_gamma2', 'sfron'),)),
         ('γ = 5, 150 iterations', (('generation_digits_sfron_gamma5', 'sfron'),)),
         ('γ = 5, 300 iterations', (('generation_digits_sfron_gamma5_300', 'sfron'),)),
         ('SalUn (for comparison)', (('generation_digits', 'salun'),))),
        docs=('docs/generation.md',), corner='UA / acc_remaining', cell='seeds'),
    # the DiT's originals and what the references' recipes do to them, seed by seed
    'ref_dit_recipes_seeds': Summary(
        '', ('seed 0', 'seed 1', 'seed 2'),
        (('original (`dit_training_digits`)', (('generation_digits_dit', 'original'),)),
         ("SFR-on, its DiT code: 600 iterations (the DiT's default)",
          (('generation_digits_dit', 'sfron'),)),
         ('SFR-on, its DDPM code: 150 iterations', (('ref_dit_sfron_ddpm_recipe', 'sfron'),)),
         ('SalUn (for comparison)', (('generation_digits_dit', 'salun'),))),
        docs=('docs/reference-ddpm.md',), corner='UA / acc_remaining', cell='seeds'),
    # UA / acc_remaining of each seed of the text-to-image job (its run recorded only the
    # originals' mean; the ESD run after it, from the same cached originals, each of them)
    'text_to_image_digits_seeds': Summary(
        '', ('seed 0', 'seed 1', 'seed 2'),
        (('original', (('esd_t2i_seeds_lr5e-6_1200', 'original'),)),
         ('ESD (600 iterations, lr 1e-5: the default)', (('text_to_image_digits', 'esd'),)),
         ('ESD, 1200 iterations, lr 5e-6', (('esd_t2i_seeds_lr5e-6_1200', 'esd'),)),
         ('SalUn', (('text_to_image_digits', 'salun'),)),
         ('SFR-on', (('text_to_image_digits', 'sfron'),)),
         ('LUR', (('text_to_image_digits', 'lur'),))),
        docs=('docs/stable-diffusion.md',), corner='UA / acc_remaining', cell='seeds'),
}


def render_summary(name: str, base: Path = RESULTS_DIR) -> str:
  """The docs block of summary ``name``, from its results' JSON, with the line under it
  that each of them would have, after the names of the results it is under."""
  summary = SUMMARIES[name]
  lines = [f"| {summary.corner} | {' | '.join(summary.columns)} |",
           '|' + '---|' * (len(summary.columns) + 1)]
  notes = {}  # line under -> the results it is under
  for title, names in summary.rows:
    cells = []
    for result in names:
      result, method = (result, summary.method) if isinstance(result, str) else result
      results = stored(result, base)
      if results is None:
        raise ValueError(f'summary {name}: {base / result}/results.json is missing: python '
                         f'experiments/reproduce.py --only {result}')
      cells.append(CELLS[summary.cell](results, method))
      under = notes.setdefault(_line_under(result, results), [])
      if result not in under:
        under.append(result)
    lines.append(f"| {title} | {' | '.join(cells)} |")
  begin, end = _markers(name)
  notes = [f"{', '.join(results)}: {note}" for note, results in notes.items()]
  return '\n'.join([begin, *lines, '', *notes, end])


def result_dir(name: str) -> Path:
  return RESULTS_DIR / name


def _shown(path: Path) -> str:
  """``path`` as a command shows it: relative to the repository root when it lies inside it
  (the commands run from the root), so that a stored COMMAND names no host's folders."""
  try:
    return str(Path(path).resolve().relative_to(ROOT))
  except ValueError:
    return str(path)


def command_line(name: str, out: Path) -> list[str]:
  """The command that makes result ``name`` in folder ``out``, run from the repository
  root."""
  entry = RESULTS[name]
  if entry.script:
    return [*(f'{k}={v}' for k, v in entry.env), 'python', f'experiments/{entry.script}',
            *entry.argv, '--json', _shown(out / 'results.json')]
  return ['jaxunlearn', *entry.argv, '--out', _shown(out)]


def command_problems(name: str, base: Path = RESULTS_DIR) -> list[str]:
  """What is wrong with result ``name``'s stored COMMAND: missing, or another command than
  the registry's (the one that made it is then not the one ``--only`` would run)."""
  path = base / name / 'COMMAND'
  if not path.is_file():
    return [f'{path} is missing: python experiments/reproduce.py --only {name} writes it']
  stored, want = path.read_text().strip(), ' '.join(command_line(name, RESULTS_DIR / name))
  return [] if stored == want else [
      f'{path} says {stored!r}, the registry {want!r}: re-measure it or correct the registry']


# the benchmarks' row and column titles
STEP_TITLES = {'plain': 'plain (FT)', 'salun': 'salun (masked RL)',
               'sfron': 'sfron (forget + retain step)', 'sfron_hvp': 'sfron_hvp (5 CG products)',
               'lur': 'lur (second-order look-ahead)'}
PROGRAM_TITLES = {
    'plain step': 'plain step (FT, RL, GA, Retrain)',
    'joint forget/retain step': "joint forget/retain step (SalUn's, SFR-on's: two gradients)",
    'Hessian-vector product': "one remain-Hessian product (SFR-on's HVP, LUR's second-order "
                              'term)'}
MODEL_TITLES = {'resnet18': 'ResNet-18', 'dit-xl2': 'DiT-XL/2'}


def _md(header, rows) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
          *('| ' + ' | '.join(row) + ' |' for row in rows)]


def steps_table(runs) -> list[str]:
  """``bench.py``'s runs ``[(label, results), ...]`` side by side: each step's milliseconds
  per run, its ratio to the plain step (the last run's), XLA's compiled peak memory and the
  PyTorch reference steps' milliseconds (each run's own), then JAX / PyTorch per run."""
  labels = [label for label, _ in runs]
  last = runs[-1][1]
  both = lambda title: title + (f" ({' / '.join(labels)})" if len(runs) > 1 else '')
  header = ['step', *(f'ms, {label}' if label else 'ms' for label in labels),
            f'/ plain ({labels[-1]})' if len(runs) > 1 else '/ plain', both('peak MiB'),
            both('PyTorch ms')]
  rows = []
  for step in (k for k in last['ms'] if not k.startswith('torch_')):
    base = 'ddpm_plain' if step.startswith('ddpm') else 'plain'
    ratio = 1.0 if step == base else last['ratios'][f'{step} / {base}']
    memory = [r.get('peak_memory_mib', {}).get(step) for _, r in runs]
    torch = [r['ms'].get(f'torch_{step}') for _, r in runs]
    rows.append([STEP_TITLES.get(step, step),
                 *(f"{r['ms'][step]:.2f}" if step in r['ms'] else '' for _, r in runs),
                 f'{ratio:.2f}', ' / '.join('' if m is None else f'{m:.1f}' for m in memory),
                 '' if all(t is None for t in torch) else
                 ' / '.join('' if t is None else f'{t:.2f}' for t in torch)])
  lines = _md(header, rows)
  versus = [f"{label + ': ' if label else ''}" + ', '.join(
      f"{step} {r['ratios'][f'{step}: jax / torch']:.2f}" for step in ('plain', 'salun', 'sfron')
      if f'{step}: jax / torch' in r['ratios']) for label, r in runs]
  if any(v.split(': ')[-1] for v in versus):
    lines += ['', 'JAX / PyTorch: ' + '; '.join(versus) + '.']
  return lines


def sd_memory_table(results: dict) -> list[str]:
  """``bench_sd_memory.py``'s rows: the step's saved residuals, the estimate (bold with
  remat), the backend's compiled peak, and, run with ``--run``, the step's time and the
  device's measured peak."""
  rows = results['rows']
  ran = any('step_ms' in row for row in rows)
  backend = rows[0]['backend'].upper() if rows else ''
  header = ['batch', 'remat', 'saved residuals', 'estimate', f'XLA:{backend} compiled peak',
            *(('step ms', 'measured peak') if ran else ())]
  gib = lambda v: f'{v:.1f} GiB'
  body = [[str(r['batch']), 'yes' if r['remat'] else 'no', gib(r['residuals_GiB']),
           f"**{gib(r['estimate_GiB'])}**" if r['remat'] else gib(r['estimate_GiB']),
           gib(r['peak_GiB']),
           *((f"{r.get('step_ms', float('nan')):.0f}",
              gib(r.get('device_peak_GiB', float('nan')))) if ran else ())] for r in rows]
  return _md(header, body)


def dit_memory_table(results: dict) -> list[str]:
  """``bench_dit_memory.py``'s rows: the layout of each compiled step and XLA's memory
  analysis of it; the library's default layout (blocks in a remat scan, each product
  recomputed, the products in a loop, float32, 3 CG iterations) in bold."""
  rows = results['rows']
  ran = any('step_ms' in row for row in rows)
  header = ['model', 'blocks', 'products', 'compute', 'CG iterations', 'arguments GiB',
            'temporaries GiB', 'peak GiB', *(('step ms', 'measured peak GiB') if ran else ())]
  body = []
  for r in rows:
    blocks = ('scan' if r['scan'] else 'unrolled') + (', remat' if r['remat'] else '')
    # 'auto' loops exactly when the products are recomputed (the transform's default)
    loop = r['unroll'] == '0' or (r['unroll'] == 'auto' and r['hvp'] == 'recompute')
    cells = [r['size'], blocks, 'recomputed' if r['hvp'] == 'recompute' else 'linearised once',
             r['dtype'], f"{r['cg_iters']} ({'loop' if loop else 'unrolled'})",
             f"{r['arguments_GiB']:.2f}", f"{r['temporaries_GiB']:.2f}", f"{r['peak_GiB']:.2f}",
             *((f"{r.get('step_ms', float('nan')):.0f}",
                f"{r.get('device_peak_GiB', float('nan')):.2f}") if ran else ())]
    if (r['scan'] and r['remat'] and r['hvp'] == 'recompute' and r['dtype'] == 'float32'
        and r['cg_iters'] == 3 and r['unroll'] == 'auto'):
      cells = [f'**{c}**' for c in cells]
    body.append(cells)
  return _md(header, body)


def flags_table(results: dict) -> list[str]:
  """``probe_xla_flags.py``'s settings: the plain step's median, PyTorch's in the same
  process and their ratio, the first call (compile and one step), and whether the weights
  after the same calls are the default's bit for bit; a setting XLA rejected shows its
  error."""
  rows = results['rows']
  default = next((r.get('params_sha256') for r in rows if r['setting'] == 'default'), None)
  body = []
  for r in rows:
    if 'error' in r:
      body.append([r['description'], f"fails: {r['error'].replace('|', '/')}", '', '', '', ''])
      continue
    torch_ms = r.get('torch_ms')
    bits = ('–' if default is None or r['setting'] == 'default' else
            'same' if r['params_sha256'] == default else 'differ')
    body.append([r['description'], f"{r['plain_ms']:.1f}", f'{torch_ms:.1f}' if torch_ms else '',
                 f"{r['jax_over_torch']:.2f}" if torch_ms else '', f"{r['first_call_s']:.1f}",
                 bits])
  return _md(['setting', 'plain step (ms)', 'PyTorch (ms)', 'JAX / PyTorch',
              'first call (s)', 'weights as default'], body)


def _collectives_cell(ops: dict) -> str:
  def size(n):
    mib = n / 2**20
    return f'{mib:.1f} MiB' if mib < 1000 else f'{mib:.0f} MiB'
  return ' + '.join(f"{op} ×{v['count']} {size(v['bytes'])}" for op, v in sorted(ops.items()))


def collectives_table(results: dict) -> list[str]:
  """``collectives.py``'s programs (rows) per model and parameter placement (columns)."""
  columns = [(m, shard) for m in results['models'] for shard in (False, True)]
  header = ['program', *(f"{MODEL_TITLES.get(m['model'], m['model'])}, "
                         + ('`--shard-params`' if shard else 'params replicated')
                         for m, shard in columns)]
  programs = list(dict.fromkeys(r['program'] for m in results['models'] for r in m['rows']))
  body = []
  for program in programs:
    cells = []
    for m, shard in columns:
      found = [r['collectives'] for r in m['rows']
               if r['program'] == program and r['shard_params'] == shard]
      cells.append(_collectives_cell(found[0]) if found else '')
    body.append([PROGRAM_TITLES.get(program, program), *cells])
  return _md(header, body)


def _mean_std(values) -> str:
  """A table cell: mean ± population std, one decimal."""
  return f'{statistics.fmean(values):.1f} ± {statistics.pstdev(values):.1f}'


def mask_table(results: dict) -> list[str]:
  """``sfron_mask.py``'s shares per Fisher-ratio threshold, mean ± std over the seeds: of
  the weights the mask selects, of a same-sized draw of retain images, and of the forget
  set's Fisher mass on the mask."""
  rows = results['rows']

  def cell(part, gamma, key):
    return _mean_std([r[part][gamma][key] for r in rows])
  header = ['F_f / F_r ≥ γ', 'weights selected: forget set (%)',
            'a draw of as many retain images (%)', "forget set's Fisher mass on them (%)",
            "the draw's on its own (%)"]
  body = [[f'{float(g):g}', cell('mask', g, 'weights_pct'), cell('draw', g, 'weights_pct'),
           cell('mask', g, 'forget_mass_pct'), cell('draw', g, 'forget_mass_pct')]
          for g in rows[0]['mask']]
  return _md(header, body)


def training_table(results: dict) -> list[str]:
  """``dit_training.py``'s scores along the original's training, mean ± std over the seeds:
  per scored step the raw weights' and their average's, then the original the job keeps."""
  keys = (('UA', 'UA (%)'), ('acc_remaining', 'acc_remaining (%)'), ('FID', 'FID'))

  def cell(rows, key):
    return _mean_std([r[key] for r in rows])
  header = ['step', 'weights', *(title for _, title in keys)]
  body = []
  for step in sorted({r['step'] for r in results['rows']}):
    for kind, label in (('raw', 'that step'), ('ema', f"EMA {results['decay']:g}")):
      rows = [r for r in results['rows'] if r['step'] == step and r['kind'] == kind]
      body.append([str(step), label, *(cell(rows, key) for key, _ in keys)])
  finals = results['originals']
  body.append([str(finals[0]['step']), "the job's original", *(cell(finals, key)
                                                              for key, _ in keys)])
  return _md(header, body)


def reach_table(results: dict) -> list[str]:
  """``study_sfron_steps.py``'s summary: per method, the updates after which UA first
  reached Retrain's (per seed), the Avg. Gap there, and the mean Avg. Gap at the end."""
  config = results['config']
  retrain = statistics.fmean(r['UA'] for r in results['retrain'])
  header = ['method', f"updates until UA ≥ Retrain's {retrain:.1f} − {config['ua_tolerance']:g} "
            '(per seed)', 'Avg. Gap there (per seed)', 'updates in all',
            'Avg. Gap at the end (mean)']
  body = []
  for name, summary in results['summary'].items():
    body.append([f'`{name}`', ', '.join('never' if n is None else str(n)
                                        for n in summary['updates_to_retrain_ua']),
                 ', '.join(f'{g:.2f}' for g in summary['avg_gap_when_reached']) or '–',
                 str(summary['final_updates']), f"{summary['final_avg_gap']:.2f}"])
  return _md(header, body)


def ratios_table(runs) -> list[str]:
  """A step benchmark's (``bench_common.report``'s JSON) runs ``[(label, results), ...]``
  side by side: each case's milliseconds, then each ratio it prints."""
  def title(label, results):
    c = results['config']
    return label or (f"{c['model'].replace('resnet', 'ResNet-')} width {c['width']}, "
                     f"{c['image_size']}x{c['image_size']}, batch {c['batch']}")
  header = ['', *(title(label, r) for label, r in runs)]
  cases = list(dict.fromkeys(k for _, r in runs for k in r['ms']))
  ratios = list(dict.fromkeys(k for _, r in runs for k in r['ratios']))

  def cell(results, part, key, fmt):
    return format(results[part][key], fmt) if key in results[part] else '–'
  body = [[f'`{k}` (ms)', *(cell(r, 'ms', k, '.1f') for _, r in runs)] for k in cases]
  body += [[k, *(cell(r, 'ratios', k, '.3f') for _, r in runs)] for k in ratios]
  return _md(header, body)


def render_table(name: str, results: dict, base: Path = RESULTS_DIR) -> str:
  """The table of a stored result, as the docs show it (a benchmark's in markdown)."""
  entry = RESULTS[name]
  kind = entry.table
  if kind in ('steps', 'ratios'):
    runs = []
    for other in (*entry.beside, name):
      found = results if other == name else stored(other, base)
      if found is None:
        raise ValueError(f'{name}: its table shows {other} beside it, and {base / other}/'
                         f'results.json is missing: python experiments/reproduce.py --only '
                         f'{other}')
      runs.append((RESULTS[other].label, found))
    return '\n'.join(steps_table(runs) if kind == 'steps' else ratios_table(runs))
  if kind == 'sd_memory':
    return '\n'.join(sd_memory_table(results))
  if kind == 'dit_memory':
    return '\n'.join(dit_memory_table(results))
  if kind == 'flags':
    return '\n'.join(flags_table(results))
  if kind == 'collectives':
    return '\n'.join(collectives_table(results))
  if kind == 'mask':
    return '\n'.join(mask_table(results))
  if kind == 'training':
    return '\n'.join(training_table(results))
  if kind == 'reach':
    return '\n'.join(reach_table(results))
  if kind == 'generation':
    from jaxunlearn.diffusion.report import format_generation_table
    return format_generation_table(results)
  if kind == 'strong':
    from jaxunlearn.report import format_strong_table
    return format_strong_table(results)
  if kind == 'classification':
    from jaxunlearn.report import format_table
    return format_table(results)
  raise ValueError(f'{name}: unknown table kind {kind!r}')


def _markers(name: str) -> tuple[str, str]:
  return f'<!-- result:{name} -->', f'<!-- /result:{name} -->'


def provenance_line(results: dict) -> str:
  """One line under a table saying what made it: when, which commit, on what, and (for a
  run stored by :func:`run` from an empty cache in one go) its wall time."""
  record = results.get('provenance') or {}
  parts = []
  if record.get('finished'):
    parts.append(f"measured {record['finished'][:10]}")
  git = record.get('git') or {}
  if git.get('commit'):
    parts.append(f"commit {git['commit'][:7]}" + (' + local changes' if git.get('dirty') else ''))
  devices = record.get('devices') or {}
  if devices.get('kind'):
    parts.append(f"{devices.get('count', 1)} x {devices['kind']}")
  if record.get('wall_s') is not None:
    parts.append(f"{record['wall_s']:.0f} s wall time from an empty cache")
  return f"({'; '.join(parts)})" if parts else '(no provenance recorded)'


def historical_line(entry: Result) -> str:
  """The line under a historical result's table: what is known of how it was made, and why
  it is not checked against today's code."""
  return (f"(historical: {entry.measured + '; ' if entry.measured else ''}{entry.historical};"
          " not checked against today's defaults)")


def _line_under(name: str, results: dict) -> str:
  """The provenance line; for a historical result the line saying why instead, or under it
  where the result recorded its provenance (made by then-current code, since overtaken)."""
  entry = RESULTS[name]
  if not entry.historical:
    return provenance_line(results)
  if results.get('provenance'):
    return f'{provenance_line(results)}\n{historical_line(entry)}'
  return historical_line(entry)


def render_block(name: str, results: dict | None, base: Path = RESULTS_DIR) -> str:
  """The docs block of result ``name``: its table and provenance line, or, for a pending
  result not measured yet (``results`` None), a line saying so and how to measure it. A
  benchmark's table is markdown, with the line and its command under it."""
  begin, end = _markers(name)
  entry = RESULTS[name]
  if results is None:
    return (f'{begin}\n```text\n(not measured yet on today\'s code: {entry.pending}; python '
            f'experiments/reproduce.py --only {name})\n```\n{end}')
  table = render_table(name, results, base)
  if entry.script:
    lines = []
    for other in (*entry.beside, name):
      found = results if other == name else stored(other, base)
      made = ' '.join(command_line(other, Path('experiments/results') / other))
      # each line names its column: the label, else the result's own name
      label = f'{RESULTS[other].label or other}: ' if entry.beside else ''
      lines.append(f'{label}{_line_under(other, found)} `{made}`')
    return f'{begin}\n{table}\n\n' + '\n'.join(lines) + f'\n{end}'
  return f'{begin}\n```text\n{table}\n{_line_under(name, results)}\n```\n{end}'


def replace_block(text: str, name: str, block: str, where: str = 'the text') -> str:
  """``text`` with its ``<!-- result:NAME -->`` block replaced by ``block``."""
  begin, end = _markers(name)
  start, stop = text.find(begin), text.find(end)
  if start < 0 or stop < start:
    raise ValueError(f'{where} has no {begin} ... {end} block for result {name}: add the two '
                     'markers where its table belongs')
  return text[:start] + block + text[stop + len(end):]


def stored(name: str, base: Path = RESULTS_DIR) -> dict | None:
  path = base / name / 'results.json'
  return json.loads(path.read_text()) if path.is_file() else None


# Settings added after results were recorded, with the value that does what the library
# did before they existed: a result that lacks one is compared as if it recorded that value
# (any other value now, or a change of the default, still makes it stale).
ADDED_SETTINGS = {'ddpm.ema_decay': 0.0}


def _differences(stored_value, current, prefix: str) -> list[str]:
  if isinstance(stored_value, dict) and isinstance(current, dict):
    out = []
    for key in sorted({*stored_value, *current}):
      path = f'{prefix}.{key}' if prefix else key
      before = ADDED_SETTINGS.get(path.split('.', 1)[-1], '<absent>')
      out += _differences(stored_value.get(key, before), current.get(key, '<absent>'), path)
    return out
  return [] if stored_value == current else [f'{prefix}: stored {stored_value!r}, now {current!r}']


# Settings that do not change a result's numbers (where files go, what is printed).
IGNORED_CONFIG = ('cache_dir', 'progress', 'checkpoint_every')


def staleness(results: dict) -> list[str]:
  """What no longer matches today's code in a stored ``results.json`` (empty: up to date):
  its recorded command, resolved now, against the config and hyperparameters it records."""
  from jaxunlearn.cli import resolve_run
  record = results.get('provenance')
  if not record or 'argv' not in record:
    return ['no provenance: re-measure it (it predates results.json recording what made it)']
  try:
    now = resolve_run(record['argv'])
  except ValueError as e:
    return [f'its command no longer resolves: {e}']
  config = {k: v for k, v in record['config'].items() if k not in IGNORED_CONFIG}
  config_now = {k: v for k, v in now['config'].items() if k not in IGNORED_CONFIG}
  hparams = dict(results.get('hparams', {}))
  if record['config'].get('tune'):
    hparams = {k: {a: b for a, b in v.items() if a != 'lr'} if k != 'train' else v
               for k, v in hparams.items()}
  return (_differences(config, config_now, 'config')
          + _differences(hparams, now['hparams'], 'hparams'))


def benchmark_staleness(name: str, results: dict) -> list[str]:
  """What says a stored benchmark was not made by its registered command: other arguments
  or another environment (the ``--json`` path aside)."""
  entry, record = RESULTS[name], results.get('provenance')
  if not record or 'argv' not in record:
    return ['no provenance: re-measure it (it predates results.json recording what made it)']
  argv, made = list(record['argv']), []
  while argv:
    arg = argv.pop(0)
    if arg in ('--json', '--cache-dir'):  # where it writes; where originals are cached
      argv = argv[1:]
    elif not arg.startswith(('--json=', '--cache-dir=')):
      made.append(arg)
  found = [] if made == list(entry.argv) else [
      f'made by the arguments {made}, registered {list(entry.argv)}']
  environment = record.get('environment', {})
  found += [f'made with {k}={environment.get(k)!r}, registered {v!r}' for k, v in entry.env
            if environment.get(k) != v]
  if entry.hparams_of:
    from jaxunlearn.cli import resolve_run
    found += _differences(results.get('hparams', {}), resolve_run(entry.hparams_of)['hparams'],
                          'hparams')
  return found


def _rendered_docs(name: str, docs: tuple, block: str, root: Path = ROOT):
  """``(path, text now, text rendered)`` of each of ``docs`` holding block ``name``."""
  for doc in docs:
    path = root / doc
    text = path.read_text()
    yield path, text, replace_block(text, name, block, doc)


def _blocks(names, base: Path = RESULTS_DIR):
  """``(name, docs files, block)`` of each result of ``names`` (default: every result and
  every summary) that has a block to render: not a missing result, nor a summary of one
  (:func:`check` names what is missing)."""
  for name in names or RESULTS:
    if not RESULTS[name].docs:  # shown only through a summary
      continue
    results = stored(name, base)
    if results is not None or RESULTS[name].pending:
      yield name, RESULTS[name].docs, render_block(name, results, base)
  for name, summary in ({} if names else SUMMARIES).items():
    if all(stored(r, base) is not None for r in summary.results()):
      yield name, summary.docs, render_summary(name, base)


def original_conflicts(base: Path = RESULTS_DIR) -> dict[str, list[str]]:
  """``{name: problems}`` of the results measured on another original than a later result
  of the same settings and seed: the same key in ``original_models`` (the settings that
  train it), another fingerprint (its weights). The settings check cannot see this: a change
  of code that moves the trained original leaves every setting as it was. Historical
  results, and results made before ``original_models`` was recorded, are left out."""
  seen = {}  # (key, seed) -> {fingerprint: [(finished, name)]}
  for name, entry in RESULTS.items():
    results = None if entry.historical else stored(name, base)
    for seed, model in ((results or {}).get('original_models') or {}).items():
      if model.get('key'):
        finished = (results.get('provenance') or {}).get('finished', '')
        seen.setdefault((model['key'], seed), {}).setdefault(
            model['fingerprint'], []).append((finished, name))
  problems = {}
  for (key, seed), by_print in seen.items():
    latest = max(by_print, key=lambda fp: max(by_print[fp]))
    later = ', '.join(sorted(name for _, name in by_print[latest]))
    for fp, made in by_print.items():
      if fp == latest:
        continue
      for _, name in made:
        problems.setdefault(name, []).append(
            f'measured on another original of seed {seed} ({key}, fingerprint {fp}) than '
            f'{later} ({latest}), measured later with the same settings: the code that trains '
            f'it changed since; re-measure it (python experiments/reproduce.py --only {name})')
  return problems


def check(names=None, base: Path = RESULTS_DIR, root: Path = ROOT) -> dict[str, list[str]]:
  """``{name: problems}`` of every result that has any: missing, stale (its settings, or
  its original: :func:`original_conflicts`), or a docs table that differs from its
  rendering. Historical results are not checked for staleness; their tables, too, must be
  their JSON's rendering."""
  problems = {name: found for name, found in original_conflicts(base).items()
              if names is None or name in names}
  for name in names or RESULTS:
    entry, results, found = RESULTS[name], stored(name, base), []
    if results is None and not entry.pending:
      found.append(f'{base / name}/results.json is missing: python experiments/reproduce.py '
                   f'--only {name}')
    elif results is not None and not entry.historical:
      found += [f'stale: {d}' for d in (benchmark_staleness(name, results) if entry.script
                                         else staleness(results))]
      found += command_problems(name, base)
    if found:
      problems[name] = found + problems.get(name, [])
  for name, docs, block in _blocks(names, base):
    for path, text, want in _rendered_docs(name, docs, block, root):
      if want != text:
        problems.setdefault(name, []).append(
            f'{path.relative_to(root)}: the table of {name} differs from its results.json '
            '(run python experiments/reproduce.py --render; tables are not typed)')
  return problems


def render(names=None) -> list[str]:
  """Rewrites the docs tables of ``names`` (default: every result) from their JSON; returns
  the files changed."""
  changed = []
  for name, docs, block in _blocks(names):
    for path, text, new in _rendered_docs(name, docs, block):
      if new != text:
        path.write_text(new)
        changed.append(str(path.relative_to(ROOT)))
  return changed


def run(name: str, cache_dir: str | None = None) -> Path:
  """Runs result ``name``'s command into ``.NAME.partial/`` and, once finished, replaces
  the stored result with it (COMMAND written beside); returns the result's folder. Without
  ``cache_dir`` its originals go to ``.NAME.cache/``, empty at the first start, kept for a
  rerun after a failure (which resumes there) and removed when the result is stored."""
  final, partial = result_dir(name), RESULTS_DIR / f'.{name}.partial'
  own_cache = RESULTS_DIR / f'.{name}.cache'
  cmd = command_line(name, partial)
  print('$ ' + ' '.join(cmd), flush=True)
  if RESULTS[name].script:
    return _run_benchmark(name, cmd, partial, final, cache_dir)
  cache = cache_dir or str(own_cache)
  exe = shutil.which('jaxunlearn') or sys.exit('jaxunlearn is not installed: pip install -e .')
  # wall time only when nothing was there to resume and the cache was empty
  fresh = not partial.exists() and not any(Path(cache).glob('*'))
  start = time.perf_counter()
  done = subprocess.run([exe, *cmd[1:], '--cache-dir', cache])
  if done.returncode != 0:
    sys.exit(f'{name}: the command failed (exit {done.returncode}); what it finished is kept '
             f'in {partial}: run the same reproduce command again to resume it')
  if fresh:
    path = partial / 'results.json'
    results = json.loads(path.read_text())
    results['provenance']['wall_s'] = round(time.perf_counter() - start, 1)
    path.write_text(json.dumps(results, indent=1))
  _store(name, partial, final)
  if cache_dir is None:
    shutil.rmtree(own_cache, ignore_errors=True)
  return final


def _store(name: str, partial: Path, final: Path) -> None:
  (partial / 'COMMAND').write_text(' '.join(command_line(name, final)) + '\n')
  (partial / '.jaxunlearn.lock').unlink(missing_ok=True)  # the finished run's, released
  if final.exists():
    shutil.rmtree(final)
  partial.rename(final)


def _run_benchmark(name: str, cmd: list[str], partial: Path, final: Path,
                   cache_dir: str | None = None) -> Path:
  entry = RESULTS[name]
  partial.mkdir(parents=True, exist_ok=True)
  script = cmd.index('python')
  cache = ('--cache-dir', cache_dir) if cache_dir and entry.takes_cache else ()
  done = subprocess.run([sys.executable, str(ROOT / cmd[script + 1]), *cmd[script + 2:],
                         *cache], env={**os.environ, **dict(entry.env)}, cwd=ROOT)
  if done.returncode != 0 or not (partial / 'results.json').is_file():
    sys.exit(f'{name}: the benchmark failed (exit {done.returncode}); the stored result is '
             'unchanged')
  _store(name, partial, final)
  return final


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--only', action='append', choices=sorted(RESULTS), metavar='NAME',
                 help='re-measure this result (repeatable); with --check or --list: check '
                      'or list these alone, measuring nothing; names: ' + ', '.join(RESULTS))
  p.add_argument('--list', action='store_true', help='list the results and their state')
  p.add_argument('--render', action='store_true', help='rewrite the docs tables from JSON')
  p.add_argument('--check', action='store_true', help='exit 1 if a result is stale')
  p.add_argument('--cache-dir', help='cache of originals for the runs (default: one per '
                 'result, empty at its first start, so that each is made from nothing)')
  args = p.parse_args(argv)
  inspect = args.check or args.list
  if args.only and not inspect:
    for name in args.only:
      run(name, args.cache_dir)
    print('rendered: ' + (', '.join(render(args.only)) or 'no docs table changed'))
  elif args.render:
    print('rendered: ' + (', '.join(render()) or 'no docs table changed'))
  listing = args.list or not (args.only or args.render or args.check)
  problems = check(args.only) if (inspect or listing) else {}
  if listing:
    for name in args.only or RESULTS:
      entry = RESULTS[name]
      if name in problems:
        state = '; '.join(problems[name])
      elif entry.pending and stored(name) is None:
        state = 'pending, not measured yet: ' + entry.pending
      else:
        state = 'historical: ' + entry.historical if entry.historical else 'up to date'
      print(f'{name:32s} {state}')
  if args.check:
    for name, found in problems.items():
      for line in found:
        print(f'{name}: {line}')
    return 1 if problems else 0
  return 0


if __name__ == '__main__':
  sys.exit(main())
