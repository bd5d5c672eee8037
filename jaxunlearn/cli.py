"""The ``jaxunlearn`` command.

    jaxunlearn run [--dataset digits] [--scenario class:3|random:10|indices:FILE]
                   [--methods retrain,ft,ga,rl] [--seeds 0,1,2] [--out DIR]
                   [--set ft.lr=0.02 --set train.epochs=5 ...] [--tune]
                   [--alignment-every N] [--parallel auto|none|pmap|shard] [--devices N]
                   [--shard-params] [--checkpoint-every N] [--restart] [--max-nonfinite N]
                   [--allow-duplicates] [--original PATH]

A run killed at any point resumes when the same command is run again (see --restart).
Exit status: 0 done, 1 done but some method run failed (diverged; see results.json
``failures``), 2 bad input or an unreadable checkpoint (nothing computed).
    jaxunlearn methods      # the registered methods and their default hyperparameters
    jaxunlearn eval-strong [--dataset digits] [--scenario random:10] [--methods ft,salun]
                           [--models 16] [--chunk 0] [--out DIR] [--set ...]
                           # N unlearned vs N retrained models: challenge score, U-LiRA
"""

from __future__ import annotations

import argparse
import sys
import time


def _csv(text: str) -> list[str]:
  """Comma-separated names; '' or ',' is none (the caller says none were given), an empty
  name between commas (``ft,,ga``) is an error."""
  items = [t.strip() for t in text.split(',')]
  if any(items) and not all(items):
    raise argparse.ArgumentTypeError(f'an empty name between commas in {text!r}')
  return [t for t in items if t]


def _seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in _csv(text)]
  except ValueError:
    raise argparse.ArgumentTypeError(f'seeds must be comma-separated integers, got {text!r}')
  if any(s < 0 for s in seeds):
    raise argparse.ArgumentTypeError(f'seeds must be >= 0, got {text!r}')
  return seeds


def _floats(text: str) -> list[float]:
  try:
    return [float(s) for s in _csv(text)]
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}')


def parse_overrides(pairs: list[str]) -> dict:
  out: dict = {}
  for pair in pairs:
    key, eq, value = pair.partition('=')
    name, dot, hp = key.partition('.')
    if not eq or not dot or not name or not hp:
      raise ValueError(f'--set {pair!r}: expected METHOD.NAME=VALUE, e.g. --set ft.lr=0.02 '
                       'or --set train.epochs=5')
    out.setdefault(name.strip(), {})[hp.strip()] = value.strip()
  return out


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jaxunlearn', description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  run = sub.add_parser('run', help='train, unlearn, evaluate and report')
  run.add_argument('--task', default='classification',
                   choices=('classification', 'generation', 'text-to-image'),
                   help='classification (ResNet, the default), generation: forget a class '
                        'of a class-conditional DDPM (UNet2D on the digits in [-1, 1]), or '
                        'text-to-image: erase a concept from a text-to-image model (the '
                        'digits with captions; --model t2i of generation, methods '
                        'esd,salun,sfron,lur by default)')
  run.add_argument('--dataset', default=None,
                   help="'digits' (embedded, default) or a TFDS name such as cifar10")
  run.add_argument('--data-dir', default=None, help='TFDS data_dir holding the prepared data')
  run.add_argument('--image-size', type=int, default=None,
                   help='input side (digits default 16; TFDS: as stored)')
  run.add_argument('--model', default=None,
                   help="classification: resnet18 (default) or resnet10; generation: unet "
                        "(default), ddpm-cifar10 (DDPM's CIFAR-10 UNet), ref-unet / "
                        "ref-cifar10 (the SalUn/SFR-on DDPM code's UNet, digits / CIFAR-10 "
                        "scale) or dit (a tiny pixel-space DiT)")
  run.add_argument('--width', type=int, default=None,
                   help=f'classification: channels of the first stage (default {_exp("width")}; '
                        '64 = the standard ResNet-18)')
  run.add_argument('--scenario', default=None,
                   help=f"'class:K', 'random:P' or 'indices:FILE' (a .npy or text file of "
                        f"training-set indices) (default {_exp('scenario')})")
  run.add_argument('--methods', type=_csv, default=None,
                   help=f'comma-separated (default: {",".join(_exp("methods"))}; generation: '
                        f'{",".join(_gen("methods"))}); see `jaxunlearn methods`')
  run.add_argument('--seeds', type=_seeds, default=None,
                   help=f'comma-separated (default {",".join(map(str, _exp("seeds")))})')
  run.add_argument('--out', default='results', help='directory for results.json/.png')
  run.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='METHOD.NAME=VALUE', help='override a hyperparameter (repeatable)')
  run.add_argument('--cache-dir', default=None,
                   help='cache of trained models (default ~/.cache/jaxunlearn, '
                        'or $JAXUNLEARN_CACHE)')
  run.add_argument('--no-cache', action='store_true', help='train everything afresh')
  run.add_argument('--quiet', action='store_true', help='no progress bars')
  run.add_argument('--tune', action='store_true',
                   help="grid-search each method's learning rate against Retrain first "
                        '(on separate tuning seeds and a validation half of the test set)')
  run.add_argument('--tune-seeds', type=_seeds, default=None,
                   help=f'default: {",".join(map(str, _exp("tune_seeds")))}')
  run.add_argument('--tune-grid', type=_floats, default=None,
                   help='factors applied to each default learning rate when tuning (default '
                        f'{",".join(f"{g:g}" for g in _exp("tune_grid"))})')
  run.add_argument('--alignment-every', type=int, default=None, metavar='N',
                   help='classification: measure the cosine between forget and retain '
                        'gradients every N updates of each iterative method (default '
                        f'{_exp("alignment_every")}; alignment.png; 0 = off; its time is not '
                        'counted in RTE)')
  run.add_argument('--parallel', default=None, choices=('auto', 'none', 'pmap', 'shard'),
                   help='how steps run over devices: auto = all local devices (pmap when '
                        'there are several), none = one device, pmap, or shard (jit over a '
                        f'device mesh, batch axis sharded); default {_exp("parallel")}')
  run.add_argument('--devices', type=int, default=None, metavar='N',
                   help='use the first N local devices (default: all)')
  run.add_argument('--num-processes', type=int, default=None, metavar='N',
                   help='several processes (hosts) as one run: start the same command in '
                        'each with its --process-id and one --coordinator (needs --parallel '
                        'shard; process 0 writes the files); 0 = ask the cluster '
                        "environment (TPU pod, SLURM) via jax.distributed.initialize()")
  run.add_argument('--process-id', type=int, default=None, metavar='I',
                   help='this process among --num-processes (0 .. N-1)')
  run.add_argument('--coordinator', default=None, metavar='HOST:PORT',
                   help="process 0's address, the same for every process")
  run.add_argument('--shard-params', action='store_true',
                   help='with --parallel shard, split params and optimizer state over the '
                        'devices too (FSDP-style, for models that do not fit one device)')
  run.add_argument('--checkpoint-every', type=int, default=None, metavar='N',
                   help='save every loop to OUT/checkpoints every N updates, so that the '
                        'same command run again after a kill resumes (0 = off; default '
                        f'{_exp("checkpoint_every")})')
  run.add_argument('--restart', action='store_true',
                   help='discard an unfinished run in OUT instead of resuming it')
  run.add_argument('--max-nonfinite', type=int, default=None, metavar='N',
                   help='steps with a non-finite loss or gradient are skipped; N in a row '
                        "stop that method's run, recorded as failed (0 = never stop; default "
                        f'{_exp("max_nonfinite")})')
  run.add_argument('--check-every', type=int, default=None, metavar='N',
                   help='generation: UA of the forgotten class every N iterations, for '
                        f'steps-to-forget (default {_gen("check_every")}; 0 = only at the end; '
                        'not timed)')
  run.add_argument('--fid-inception', metavar='PTH',
                   help="generation: FID in Inception pool-3 features, from pytorch-fid's "
                        'weight file pt_inception-2015-12-05-6726825d.pth on disk (default: '
                        "the generation classifier's features)")
  run.add_argument('--original', default=None, metavar='PATH',
                   help='start from this trained model instead of training one: '
                        'classification: an orbax checkpoint directory of ours, or a '
                        'reference PyTorch ResNet-18 checkpoint (SalUn\'s or SFR-on\'s); '
                        'generation: a diffusers UNet2DModel folder, or the references\' '
                        'DDPM ckpts/ckpt.pth (needs torch)')
  run.add_argument('--sampling', default=None, choices=('fast', 'reference'),
                   help='generation: the evaluation sampler: fast (50 DDIM steps, eta 0, '
                        'guidance 2, the default) or reference (the references\' 1000 steps, '
                        'eta 1, no x0 clipping, their cond_scale 2 = guidance 3)')
  run.add_argument('--allow-duplicates', action='store_true',
                   help='run even if forget examples have exact copies in the retain or '
                        'test set')
  listing = sub.add_parser('methods', help='list methods and default hyperparameters')
  listing.add_argument('--verbose', '-v', action='store_true',
                       help='also each hyperparameter: its meaning and allowed values')
  strong = sub.add_parser('eval-strong', help='many-model evaluation: the NeurIPS 2023 '
                          'challenge score and U-LiRA over N unlearned vs N retrained models')
  strong.add_argument('--dataset', default='digits')
  strong.add_argument('--data-dir', default=None)
  strong.add_argument('--image-size', type=int, default=None)
  strong.add_argument('--model', default='resnet18')
  strong.add_argument('--width', type=int, default=16)
  strong.add_argument('--scenario', default='random:10')
  strong.add_argument('--methods', type=_csv, default=None,
                      help='comma-separated (default: ft,ga,rl,salun,sfron,lur); original '
                           'scores the originals as they are (the floor)')
  strong.add_argument('--models', type=int, default=16,
                      help='N models of each kind (originals, Retrains, per method)')
  strong.add_argument('--split-seed', type=int, default=0, help='seed of the one forget set')
  strong.add_argument('--chunk', type=int, default=None,
                      help='models per vmapped program (0: all; 1: a loop; default: all on '
                           'a GPU/TPU, 1 on the CPU, where vmap measured slower)')
  strong.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='METHOD.NAME=VALUE')
  strong.add_argument('--out', default='strong')
  strong.add_argument('--cache-dir', default=None)
  strong.add_argument('--no-cache', action='store_true')
  strong.add_argument('--quiet', action='store_true')
  convert = sub.add_parser('convert-dit', help='a downloaded diffusers DiT pipeline folder '
                           '(e.g. facebook/DiT-XL-2-256) -> an orbax checkpoint of our Flax '
                           'DiT and AutoencoderKL')
  convert.add_argument('pipeline', help='folder with transformer/ (and vae/) as '
                       'DiTPipeline.save_pretrained or huggingface-cli download writes it')
  convert.add_argument('out', help='output folder (config.json + orbax params)')
  convert.add_argument('--time-freq-shift', type=float, default=0.0,
                       help="timestep frequencies: 0 = the original DiT code's (default; the "
                            "released checkpoints were trained with it), 1 = diffusers'")
  sd = sub.add_parser('convert-sd', help='a downloaded Stable Diffusion folder (diffusers '
                      'layout) -> one orbax checkpoint of our Flax UNet, text encoder and VAE, '
                      'with the tokenizer files and the scheduler config')
  sd.add_argument('pipeline', help='folder with unet/, text_encoder/, vae/, tokenizer/ and '
                  'scheduler/ as StableDiffusionPipeline.save_pretrained or a hub download '
                  'writes it')
  sd.add_argument('out', help='output folder (config.json, params/, tokenizer/, '
                  'scheduler_config.json)')
  er = sub.add_parser('erase-sd', help='erase a concept from a converted Stable Diffusion '
                      'with ESD, SalUn, SFR-on, LUR or GA (the UNet alone changes)')
  er.add_argument('checkpoint', help='a folder written by jaxunlearn convert-sd')
  er.add_argument('--forget', required=True, metavar='CSV', help='the concept\'s prompt set')
  er.add_argument('--retain', required=True, metavar='CSV', help='the prompts to keep')
  er.add_argument('--method', default='salun', help='esd, salun, sfron, lur or ga')
  er.add_argument('--set', dest='overrides', action='append', default=[],
                  metavar='METHOD.NAME=VALUE', help='a hyperparameter over the references\' '
                  'Stable Diffusion settings')
  er.add_argument('--epochs', type=int, default=5,
                  help='passes over the forget images (the references: 5 for a class, 1 for '
                       'nudity); sets the steps unless --set gives them')
  er.add_argument('--images-per-prompt', type=int, default=None,
                  help='images the original makes of each prompt (default: 800 per set)')
  er.add_argument('--forget-images', default=None, metavar='DIR',
                  help='a folder of forget images to use instead (png/jpg)')
  er.add_argument('--retain-images', default=None, metavar='DIR')
  er.add_argument('--image-size', type=int, default=512)
  er.add_argument('--sample-steps', type=int, default=50, help='DDIM steps of the generation')
  er.add_argument('--guidance', type=float, default=7.5)
  er.add_argument('--batch-size', type=int, default=4, help='images per generation batch')
  er.add_argument('--seed', type=int, default=0)
  er.add_argument('--parallel', default='auto', choices=('auto', 'none', 'pmap', 'shard'))
  er.add_argument('--out', default='erased')
  ev = sub.add_parser('eval-prompts', help='judge a converted Stable Diffusion on prompt '
                      'sets: generate per prompt, score with an ONNX model, report forget rate '
                      '(UA) and retain accuracy with sample grids')
  ev.add_argument('checkpoint', help='a folder written by jaxunlearn convert-sd')
  ev.add_argument('--forget', action='append', default=[], metavar='CSV',
                  help='a prompt set whose concept should be gone (repeatable)')
  ev.add_argument('--retain', action='append', default=[], metavar='CSV',
                  help='a prompt set whose images should keep their labels (repeatable)')
  ev.add_argument('--unet', default=None, help='orbax params of an unlearned UNet to judge '
                  'instead of the checkpoint\'s own')
  ev.add_argument('--scorer', required=True, metavar='ONNX',
                  help='an ONNX classifier (or detector with --threshold) run by onnxruntime')
  ev.add_argument('--label-column', default='classidx',
                  help='the CSV column of expected scorer labels (default classidx)')
  ev.add_argument('--forget-label', type=int, default=None,
                  help='the label of every forget prompt, for CSVs without a label column '
                       '(a detector: 1 = concept present)')
  ev.add_argument('--retain-label', type=int, default=None,
                  help='the same for retain prompts (a detector: 0)')
  ev.add_argument('--mean', type=_floats, default=(0.0, 0.0, 0.0),
                  help='the scorer\'s input normalization: (pixel in [0,1] - mean) / std')
  ev.add_argument('--std', type=_floats, default=(1.0, 1.0, 1.0))
  ev.add_argument('--threshold', type=float, default=None,
                  help='label 1 where the scorer\'s single output exceeds it')
  ev.add_argument('--images-per-prompt', type=int, default=10)
  ev.add_argument('--image-size', type=int, default=512)
  ev.add_argument('--steps', type=int, default=50, help='DDIM steps')
  ev.add_argument('--guidance', type=float, default=7.5)
  ev.add_argument('--batch-size', type=int, default=4)
  ev.add_argument('--save-images', action='store_true',
                  help='also write every image as SET/{case_number}_{j}.png')
  ev.add_argument('--out', default='prompt-eval')
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  from jaxunlearn import methods as methods_lib
  if args.command == 'methods':
    from jaxunlearn.diffusion.methods import GENERATION_METHODS
    for title, registry in (('classification', methods_lib.METHODS),
                            ('generation (--task generation)', GENERATION_METHODS)):
      print(f'# {title}')
      for name, m in sorted(registry.items()):
        print(f'{name:10s} {m.summary}\n{"":10s} {m.defaults}')
        if args.verbose:
          for field, default, meaning in m.hparams.describe():
            print(f'{"":12s}{field} = {default!r}: {meaning}')
    return 0
  if args.command == 'eval-strong':
    return _run_strong(args)
  if args.command == 'convert-dit':
    return _convert_dit(args)
  if args.command == 'convert-sd':
    return _convert_sd(args)
  if args.command == 'eval-prompts':
    return _eval_prompts(args)
  if args.command == 'erase-sd':
    return _erase_sd(args)
  try:
    _join_processes(args)
  except ValueError as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  if args.num_processes is None:
    return _run_task(args)
  from jaxunlearn.parallel import leave_if_failed
  try:
    code = _run_task(args)
  except BaseException:  # (a KeyboardInterrupt, a collective that lost its peer, ...)
    import traceback
    traceback.print_exc()
    code = 1
  return leave_if_failed(code)


def _run_task(args) -> int:
  unused = _flags_the_task_ignores(args)
  if unused:
    other = 'classification' if _generative(args) else 'generation'
    print(f"jaxunlearn: error: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} for "
          f'--task {other}; --task {args.task} does not use '
          f"{'it' if len(unused) == 1 else 'them'}: drop {'it' if len(unused) == 1 else 'them'}",
          file=sys.stderr)
    return 2
  if _generative(args):
    return _run_generation(args)

  from jaxunlearn.experiment import run_experiment
  from jaxunlearn.report import format_table
  try:
    config = _classification_config(args)
    _check_out(args.out)
  except ValueError as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  return _execute(lambda: run_experiment(config, args.out, restart=args.restart), format_table,
                  lambda r: f'{args.out}/results.json, {args.out}/results.png'
                            + (' and alignment.png' if r.get('alignment') else ''))


def _classification_config(args):
  from jaxunlearn.experiment import ExperimentConfig
  config = ExperimentConfig(**_settings(args, _CLASSIFICATION_ONLY))
  config.validate()
  return config


def _generation_config(args, devices: bool = True):
  from jaxunlearn.diffusion.experiment import (FAST_SAMPLING, REFERENCE_SAMPLING,
                                               T2I_METHODS, GenerationConfig)
  settings = _settings(args, _GENERATION_ONLY)
  sampling = settings.pop('sampling', None)
  if sampling is not None:
    settings.update(REFERENCE_SAMPLING if sampling == 'reference' else FAST_SAMPLING)
  if args.original is not None:
    settings['unet_path'] = args.original
  if args.task == 'text-to-image':
    if settings.get('model', 't2i') != 't2i':
      raise ValueError(f"--task text-to-image runs the text-to-image model: drop --model "
                       f"{settings['model']}")
    settings['model'] = 't2i'
    settings.setdefault('methods', T2I_METHODS)
  config = GenerationConfig(**settings)
  config.validate(devices)
  return config


def resolve_run(argv) -> dict:
  """What ``jaxunlearn ARGV`` (``run`` or ``eval-strong``) would run with today's code,
  without running it:
  ``{'config': the full config as results.json's provenance records it, 'hparams': each
  method's resolved hyperparameters (and the training settings) as results.json records
  them}``. ``--tune`` runs choose learning rates on data: their ``lr`` is left out.
  What the published-results check (``experiments/reproduce.py --check``) compares a
  stored result with. Raises ValueError for a command that is not a valid ``run``."""
  import dataclasses
  import json
  argv = list(argv)
  if not argv or argv[0] not in ('run', 'eval-strong'):
    raise ValueError(f'not a `jaxunlearn run` or `eval-strong` command: {argv}')
  try:
    args = build_parser().parse_args(argv)
  except SystemExit:
    raise ValueError(f'jaxunlearn {" ".join(argv)}: not a valid command') from None
  if args.command == 'eval-strong':
    config = _strong_config(args)
  elif _generative(args):
    config = _generation_config(args, devices=False)  # this host's devices do not matter
  else:
    config = _classification_config(args)
  hparams = config.resolved_hparams()
  return json.loads(json.dumps({'config': dataclasses.asdict(config), 'hparams': hparams},
                               default=str))


_CLASSIFICATION_ONLY = {'width': '--width', 'tune': '--tune', 'tune_seeds': '--tune-seeds',
                        'tune_grid': '--tune-grid', 'alignment_every': '--alignment-every',
                        'allow_duplicates': '--allow-duplicates', 'original': '--original'}
_GENERATION_ONLY = {'check_every': '--check-every', 'fid_inception': '--fid-inception',
                    'sampling': '--sampling'}


# Flags of `run` that set the config field of the same name (their argparse default is None
# or False: not given, so the field's default applies).
_COMMON = ('dataset', 'data_dir', 'image_size', 'model', 'scenario', 'methods', 'seeds',
           'parallel', 'shard_params', 'checkpoint_every')


def _settings(args, task_flags: dict) -> dict:
  """The config fields the command line sets: the flags given (common ones and the task's
  own), plus those every run sets (overrides, cache, progress). A flag left out keeps the
  config's default, so the CLI and the library have one default each."""
  from jaxunlearn import checkpoint
  out = {name: getattr(args, name) for name in (*_COMMON, *task_flags)
         if _given(getattr(args, name))}
  for name in ('methods', 'seeds', 'tune_seeds', 'tune_grid'):
    if name in out:
      out[name] = tuple(out[name])
  if args.devices is not None:
    out['num_devices'] = args.devices
  if args.max_nonfinite is not None:
    out['max_nonfinite'] = args.max_nonfinite or None  # 0: never stop
  out['overrides'] = parse_overrides(args.overrides)
  out['cache_dir'] = None if args.no_cache else (args.cache_dir
                                                 or str(checkpoint.default_cache_dir()))
  out['progress'] = not args.quiet
  return out


def _exp(name: str):
  """An :class:`ExperimentConfig` field's default (for --help)."""
  return _field_default('jaxunlearn.experiment', 'ExperimentConfig', name)


def _gen(name: str):
  """A :class:`GenerationConfig` field's default (for --help)."""
  return _field_default('jaxunlearn.diffusion.experiment', 'GenerationConfig', name)


def _field_default(module: str, cls: str, name: str):
  import dataclasses
  import importlib
  field = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
  return field[name].default


def _generative(args) -> bool:
  """Whether the run is the generation job (class-conditional or text-to-image)."""
  return args.task in ('generation', 'text-to-image')


def _flags_the_task_ignores(args) -> list[str]:
  """The flags given (not left at their unset default) that ``args.task`` does not use."""
  other = _CLASSIFICATION_ONLY if _generative(args) else _GENERATION_ONLY
  return [flag for name, flag in other.items()
          if name != 'original' and _given(getattr(args, name))]


def _given(value) -> bool:
  """Whether a flag was given: its argparse default is None (or False for a switch); a
  0 given is given (``0 in (None, False)`` is True in Python, hence no ``in`` test)."""
  return value is not None and value is not False


def _join_processes(args) -> None:
  """With ``--num-processes``, joins the run of several processes before anything touches
  a JAX backend; the processes other than 0 print nothing but errors."""
  n = args.num_processes
  if n is None:
    if args.process_id is not None or args.coordinator is not None:
      raise ValueError('--process-id and --coordinator go with --num-processes N')
    return
  if n < 0:
    raise ValueError(f'--num-processes must be >= 1 (or 0: from the cluster), got {n}')
  if args.parallel != 'shard':
    raise ValueError('several processes run with --parallel shard (jit over the devices of '
                     'every process); add it')
  if n > 0 and (args.coordinator is None or args.process_id is None
                or not 0 <= args.process_id < n):
    raise ValueError(f'--num-processes {n} needs --coordinator HOST:PORT and --process-id '
                     f'between 0 and {n - 1}')
  from jaxunlearn.parallel import initialize_distributed
  if n == 0:
    initialize_distributed()
  else:
    initialize_distributed(args.coordinator, n, args.process_id)
  import jax
  if jax.process_index() != 0:
    args.quiet = True


def _check_out(out) -> None:
  """``--out`` writable, with room, before any compute (ValueError otherwise)."""
  from jaxunlearn import checkpoint
  if out is not None:
    checkpoint.check_output_dir(out)


def _execute(run, table, written) -> int:
  """Runs a job; prints its table, what it wrote and its failures. Exit status: 0, 1 if
  a method (or the training of an original) diverged, 2 for bad input or checkpoints."""
  from jaxunlearn import checkpoint
  from jaxunlearn.train import NonFiniteError
  start = time.perf_counter()
  try:
    results = run()
  except (ValueError, FileNotFoundError, ImportError, checkpoint.CheckpointError) as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  except NonFiniteError as e:  # training an original model diverged
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 1
  except OSError as e:  # a full disk, a directory gone read-only: what is done is kept
    print(f'jaxunlearn: error: cannot write {e.filename or "the results"} '
          f'({e.strerror or e}); free space or fix the location and run the same command '
          'again: it resumes from what was finished', file=sys.stderr)
    return 2
  if checkpoint.is_primary():  # (process 0 of several writes and reports)
    print(table(results))
    print(f'\nwrote {written(results)} ({time.perf_counter() - start:.0f} s)')
  for name, seeds in results.get('failures', {}).items():
    for seed, message in seeds.items():
      print(f'jaxunlearn: {name} failed on seed {seed}: {message}', file=sys.stderr)
  return 1 if results.get('failures') else 0


def _strong_config(args):
  from jaxunlearn import checkpoint
  from jaxunlearn.strong_eval import StrongConfig
  cache = None if args.no_cache else (args.cache_dir or str(checkpoint.default_cache_dir()))
  extra = {} if args.methods is None else {'methods': tuple(args.methods)}
  config = StrongConfig(
      dataset=args.dataset, data_dir=args.data_dir, image_size=args.image_size,
      model=args.model, width=args.width, scenario=args.scenario, models=args.models,
      split_seed=args.split_seed, chunk=args.chunk,
      overrides=parse_overrides(args.overrides), cache_dir=cache, progress=not args.quiet,
      **extra)
  config.validate()
  return config


def _run_strong(args) -> int:
  from jaxunlearn.report import format_strong_table
  from jaxunlearn.strong_eval import run_strong
  try:
    config = _strong_config(args)
    _check_out(args.out)
  except ValueError as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  return _execute(lambda: run_strong(config, args.out), format_strong_table,
                  lambda r: f'{args.out}/results.json and {args.out}/strong.png')


def _run_generation(args) -> int:
  from jaxunlearn.diffusion.experiment import run_generation
  from jaxunlearn.diffusion.report import format_generation_table
  try:
    config = _generation_config(args)
    _check_out(args.out)
  except ValueError as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  return _execute(lambda: run_generation(config, args.out, restart=args.restart),
                  format_generation_table,
                  lambda r: f'{args.out}/results.json, results.png, forgetting.png and '
                            'samples.png')


def _convert_dit(args) -> int:
  from pathlib import Path

  from jaxunlearn.convert import load_diffusers_dit, load_diffusers_vae, save_dit_checkpoint
  from jaxunlearn.models.dit import count_params
  try:
    _check_out(Path(args.out).absolute().parent)  # writable, with room, before converting
    model, params = load_diffusers_dit(args.pipeline, args.time_freq_shift)
    vae = vae_params = None
    if (Path(args.pipeline) / 'vae').is_dir():
      vae, vae_params = load_diffusers_vae(args.pipeline)
  except (FileNotFoundError, ValueError) as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  out = save_dit_checkpoint(args.out, model, params, vae, vae_params)
  print(f'DiT ({count_params(params) / 1e6:.1f}M params'
        + (f', VAE {count_params(vae_params) / 1e6:.1f}M' if vae is not None else '')
        + f') written to {out}; load with jaxunlearn.convert.load_dit_checkpoint')
  return 0


def _convert_sd(args) -> int:
  from pathlib import Path

  from jaxunlearn.convert.stable_diffusion import check_sd_folder, convert_sd_folder
  from jaxunlearn.models.dit import count_params
  try:
    check_sd_folder(args.pipeline)
    _check_out(Path(args.out).absolute().parent)
    out = convert_sd_folder(args.pipeline, args.out)
  except (FileNotFoundError, ValueError) as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  from jaxunlearn.checkpoint import load_variables
  sizes = {k: count_params(v) / 1e6 for k, v in load_variables(out / 'params').items()}
  print(f"Stable Diffusion (UNet {sizes['unet']:.1f}M, text encoder "
        f"{sizes['text_encoder']:.1f}M, VAE {sizes['vae']:.1f}M params) written to {out}; load "
        'with jaxunlearn.convert.stable_diffusion.load_sd_checkpoint')
  return 0


def _erase_sd(args) -> int:
  from pathlib import Path

  from jaxunlearn.data.prompts import read_prompt_set
  from jaxunlearn.diffusion import stable_diffusion as sdx
  from jaxunlearn.evaluate.prompts import load_image_folder
  from jaxunlearn.parallel import Parallel
  try:
    overrides = parse_overrides(args.overrides)
    unknown = set(overrides) - {args.method}
    if unknown:
      raise ValueError(f'--set names {sorted(unknown)}, but the method is {args.method!r}')
    forget = read_prompt_set(args.forget, label_column=None)
    retain = read_prompt_set(args.retain, label_column=None)
    images = {}
    for name, folder in (('forget', args.forget_images), ('retain', args.retain_images)):
      if folder is not None:
        images[name] = load_image_folder(folder, args.image_size)[0]
    _check_out(Path(args.out).absolute().parent)
    erasure = sdx.erase_concept(
        args.checkpoint, forget, retain, args.method, overrides.get(args.method),
        epochs=args.epochs, images_per_prompt=args.images_per_prompt,
        forget_images=images.get('forget'), retain_images=images.get('retain'),
        image_size=args.image_size, sample_steps=args.sample_steps,
        guidance_scale=args.guidance, batch_size=args.batch_size, seed=args.seed,
        parallel=Parallel.from_setting(args.parallel))
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  from jaxunlearn.provenance import provenance
  settings = {k: v for k, v in vars(args).items() if k != 'command'}
  out = sdx.save_erasure(erasure, args.out, {'provenance': provenance(settings)})
  print(f'{args.method}: {erasure.forget_images} forget and {erasure.retain_images} retain '
        f'images, {erasure.seconds:.0f} s; the UNet written to {out / "unet"} (judge it with '
        f'jaxunlearn eval-prompts {args.checkpoint} --unet {out / "unet"} ...)')
  return 0


def _eval_prompts(args) -> int:
  from pathlib import Path

  from jaxunlearn.data.prompts import read_prompt_set
  from jaxunlearn.evaluate import prompts as pe
  try:
    if not args.forget and not args.retain:
      raise ValueError('give at least one prompt set: --forget CSV and/or --retain CSV')
    if args.images_per_prompt < 1 or args.batch_size < 1 or args.steps < 1:
      raise ValueError('--images-per-prompt, --batch-size and --steps must be >= 1')
    sets = {}
    for role, paths, label in (('forget', args.forget, args.forget_label),
                               ('retain', args.retain, args.retain_label)):
      for path in paths:
        ps = read_prompt_set(path, label_column=args.label_column)
        if label is not None:
          ps = ps.with_label(label)
        elif ps.labels is None:
          raise ValueError(f'{path} has no {args.label_column!r} column: give '
                           f'--label-column or --{role}-label')
        name = ps.name if ps.name not in sets else f'{ps.name}_{len(sets)}'
        sets[name] = (ps, role)
    scorer = pe.onnx_scorer(args.scorer, mean=args.mean, std=args.std,
                            threshold=args.threshold)
    _check_out(Path(args.out).absolute().parent)
    unet = None
    if args.unet is not None:
      from jaxunlearn.checkpoint import load_variables
      unet = load_variables(args.unet)
      unet = unet.get('params', unet)
    generator = pe.StableDiffusionGenerator.from_checkpoint(
        args.checkpoint, unet_params=unet, image_size=args.image_size, num_steps=args.steps,
        guidance_scale=args.guidance)
    for ps, _ in sets.values():
      generator.check(ps.prompts)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f'jaxunlearn: error: {e}', file=sys.stderr)
    return 2
  results, images = pe.evaluate_prompt_sets(generator, sets, scorer,
                                            images_per_prompt=args.images_per_prompt,
                                            batch_size=args.batch_size)
  from jaxunlearn.provenance import provenance
  settings = {k: v for k, v in vars(args).items() if k != 'command'}
  out = pe.write_prompt_report(results, images, args.out,
                               metadata={'provenance': provenance(settings)})
  if args.save_images:
    for name, prompt_images in images.items():
      pe.save_image_folder(prompt_images, Path(args.out) / name)
  for name, r in results.items():
    score = f"UA {r['UA']:.1f}" if 'UA' in r else f"accuracy {r['accuracy']:.1f}"
    print(f"{name} ({r['role']}, {r['images']} images): {score}")
  print(f'results and grids written to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
