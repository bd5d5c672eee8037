"""What the paper configurations share: one command line, and ``--smoke``.

Each ``experiments/<setting>.py`` holds one paper setting (dataset, model, scenario,
methods, recipe) and its exact command in its docstring. Data come from a TFDS
``data_dir`` prepared beforehand (``tfds build cifar10 --data_dir DIR``) or, for ImageNet,
an ImageFolder tree; weights from checkpoints converted beforehand (``jaxunlearn
convert-dit``, ``jaxunlearn.convert.load_diffusers_unet``). Nothing is downloaded.

``--smoke`` runs the same code on mock data (``tfds.testing.mock_data``, or a few random
images in an ImageFolder tree), with a tiny model and a few steps of every method, so that
CI proves each configuration starts and reaches its report (``tests/test_paper_configs.py``).
Its numbers mean nothing.

``--print-hparams`` prints the resolved hyperparameters of every method the script runs
(and of the original's training) as JSON ``{method: {name: value}}`` and exits, reading
no data. The classification settings come from :mod:`jaxunlearn.paper_settings` (each
value with the reference file and line it was read from: ``docs/paper-settings.md``);
``tests/test_paper_settings.py`` checks that the scripts resolve to that table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from jaxunlearn.experiment import ExperimentConfig, run_experiment
from jaxunlearn.report import format_table

# A few steps of every classification method (the smoke run).
SMOKE_CLASSIFICATION = {
    'train': {'epochs': 1}, 'retrain': {'epochs': 1}, 'ft': {'epochs': 1}, 'ga': {'epochs': 1},
    'rl': {'epochs': 1}, 'l1_sparse': {'epochs': 1}, 'salun': {'epochs': 1},
    'sfron': {'iterations': 2, 'every': 1}, 'lur': {'epochs': 1},
    'iu': {'num_samples': 8}, 'bs': {'epochs': 1}, 'scrub': {'epochs': 1, 'msteps': 1},
    'bad_teacher': {'epochs': 1}, 'scissorhands': {'epochs': 1},
}
_ONE_EPOCH = {'epochs': 1, 'schedule': 'constant', 'drop_epochs': ()}  # no drops in 1 epoch


def parser(doc: str, smoke_help: str = 'mock data, a tiny model, a few steps: proves the '
           'configuration starts (seconds to minutes on a CPU)') -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=doc)
  p.add_argument('--data-dir', default=None, help='TFDS data_dir holding the prepared data')
  p.add_argument('--out', default=None, help='results directory (default results/<setting>)')
  p.add_argument('--seeds', default=None, help='comma-separated (default: the papers\')')
  p.add_argument('--cache-dir', default=None, help='cache of originals and Retrains')
  p.add_argument('--methods', default=None, help='comma-separated subset of the setting\'s')
  p.add_argument('--smoke', action='store_true', help=smoke_help)
  p.add_argument('--print-hparams', action='store_true',
                 help='print every method\'s resolved hyperparameters as JSON and exit')
  p.add_argument('--quiet', action='store_true')
  return p


def for_methods(overrides: dict, methods, always=('train', 'retrain')) -> dict:
  """``overrides`` of the methods in ``methods`` (and ``always``): a paper setting's table
  holds every method, a run may choose a subset (``--methods``)."""
  return {m: v for m, v in overrides.items() if m in methods or m in always}


def merged(base: dict, changes: dict) -> dict:
  """``base`` overrides updated method by method with ``changes``."""
  return {m: {**base.get(m, {}), **changes.get(m, {})} for m in {**base, **changes}}


def print_hparams(resolved: dict) -> dict:
  """Prints ``{method: {name: value}}`` as JSON (tuples as lists); returns it."""
  lines = [f' {json.dumps(m)}: {json.dumps(v)}' for m, v in resolved.items()]
  print('{\n' + ',\n'.join(lines) + '\n}')
  return resolved


def common_changes(args) -> dict:
  """The config fields the shared flags set."""
  changes = {'progress': not args.quiet}
  if args.seeds:
    changes['seeds'] = tuple(int(s) for s in args.seeds.split(','))
  if args.cache_dir:
    changes['cache_dir'] = args.cache_dir
  if args.methods:
    changes['methods'] = tuple(args.methods.split(','))
  return changes


@contextlib.contextmanager
def tfds_data_dir(args, num_examples: int = 48):
  """The TFDS ``data_dir`` to read: ``args.data_dir``, or under ``--smoke`` a temporary
  directory with TFDS's mock data standing in for every dataset."""
  if not args.smoke:
    if args.data_dir is None:
      sys.exit('give --data-dir (a TFDS data_dir prepared with `tfds build NAME --data_dir '
               'DIR` on a machine with a network), or --smoke to try the configuration')
    yield args.data_dir
    return
  import tensorflow_datasets as tfds
  with tempfile.TemporaryDirectory() as tmp, tfds.testing.mock_data(num_examples=num_examples):
    yield tmp


def _run_setting(run, config, changes: dict, args, out) -> dict:
  """``run(config, out)`` for ``config`` with ``changes``, reading the data of ``args``
  (validated before any compute)."""
  config = dataclasses.replace(config, **changes)
  with tfds_data_dir(args) as data_dir:
    config = dataclasses.replace(config, data_dir=data_dir)
    config.validate()
    return run(config, out)


def classification_main(setting: str, config: ExperimentConfig, doc: str, argv=None) -> dict:
  """Runs ``config`` (a paper setting) from the command line; ``--smoke`` on mock data."""
  from jaxunlearn.methods import resolve_hparams
  args = parser(doc).parse_args(argv)
  out = args.out or f'results/{setting}'
  changes = common_changes(args)
  methods = changes.get('methods', config.methods)
  overrides = for_methods(config.overrides, methods)
  if args.smoke:
    smoke = for_methods({**SMOKE_CLASSIFICATION, 'train': _ONE_EPOCH, 'retrain': _ONE_EPOCH},
                        methods)
    changes.update(width=4, seeds=(0,), cache_dir=None, checkpoint_every=0, image_size=16,
                   allow_duplicates=True)  # mock data repeat images
    overrides = merged(overrides, smoke)
  changes['overrides'] = overrides
  if args.print_hparams:
    config = dataclasses.replace(config, **changes)
    return print_hparams({
        'train': config.train.replace(**config.overrides.get('train', {})).to_dict(),
        **{m: resolve_hparams(m, config.overrides.get(m)).to_dict()
           for m in ('retrain', *config.methods)}})
  results = _run_setting(run_experiment, config, changes, args, out)
  print(format_table(results))
  print(f'written: {Path(out) / "results.json"}, {Path(out) / "results.png"}')
  return results


# A few steps of every generation method (the smoke run).
SMOKE_GENERATION = {
    'ddpm': {'steps': 4, 'num_timesteps': 50, 'batch_size': 16}, 'classifier': {'epochs': 1},
    'salun': {'steps': 2, 'batch_size': 16}, 'sfron': {'iterations': 2, 'batch_size': 16},
    'lur': {'steps': 2, 'batch_size': 16}, 'ga': {'steps': 2, 'batch_size': 16},
    'sa': {'steps': 2, 'batch_size': 16, 'replay_per_class': 2, 'fisher_timesteps': 2,
           'sample_steps': 2},
}


def generation_main(setting: str, config, doc: str, argv=None) -> dict:
  """Runs a :class:`jaxunlearn.diffusion.experiment.GenerationConfig` (a paper setting)
  from the command line; ``--smoke`` on mock data with a tiny UNet."""
  from jaxunlearn.diffusion.experiment import run_generation
  from jaxunlearn.diffusion.report import format_generation_table
  p = parser(doc)
  p.add_argument('--unet', default=None, help='the original model, loaded instead of '
                 'trained: the references\' DDPM checkpoint (ckpts/ckpt.pth or its run '
                 'folder) or a diffusers UNet2DModel folder (class-conditional)')
  p.add_argument('--sampling', default='reference', choices=('reference', 'fast'),
                 help='evaluation sampler: the references\' (1000 DDIM steps, eta 1, no '
                      'clipping, guidance 3 = their cond_scale 2; the default) or fast (50 '
                      'deterministic steps, guidance 2)')
  args = p.parse_args(argv)
  out = args.out or f'results/{setting}'
  from jaxunlearn.diffusion.experiment import FAST_SAMPLING, REFERENCE_SAMPLING
  changes = {**common_changes(args), 'unet_path': args.unet,
             **(REFERENCE_SAMPLING if args.sampling == 'reference' else FAST_SAMPLING)}
  if args.smoke:
    methods = changes.get('methods', config.methods)
    changes.update(model='ref-unet', channels=(8,), image_size=8, seeds=(0,), cache_dir=None,
                   classifier_width=4, check_every=0, checkpoint_every=0, forget_samples=4,
                   fid_samples_per_class=2, sample_steps=2,
                   overrides={k: v for k, v in SMOKE_GENERATION.items()
                              if k in ('ddpm', 'classifier') or k in methods})
  if args.print_hparams:
    from jaxunlearn.diffusion.methods import GENERATION_METHODS
    from jaxunlearn.methods import resolve_hparams
    config = dataclasses.replace(config, **changes)
    return print_hparams({
        'ddpm': dataclasses.asdict(config._replaced('ddpm')),
        'classifier': config._replaced('classifier').to_dict(),
        'sampling': {k: getattr(config, k) for k in REFERENCE_SAMPLING},
        **{m: resolve_hparams(m, config.method_overrides(m), GENERATION_METHODS).to_dict()
           for m in config.methods}})
  results = _run_setting(run_generation, config, changes, args, out)
  print(format_generation_table(results))
  print(f'written: {Path(out) / "results.json"}, samples.png, results.png')
  return results
