"""The parts of ``experiments/device_check.sh`` that are not other scripts: what machine this
is, whether two identical runs give identical numbers, and the one JSON of everything.

    python experiments/device_check.py env [--json F]       # versions and devices (JSON)
    python experiments/device_check.py determinism [--steps 20] [--width 64] [--json F]
    python experiments/device_check.py collect DIR         # DIR/*.json -> one JSON

``determinism`` trains the same ResNet-18 (CIFAR stem; ``--model``) from the same
initialisation on the same batches twice, in one process, through the same compiled steps
(plain SGD, then SalUn's masked step, then SFR-on's forget step, ``--steps`` each), and
reports whether the final parameters and batch statistics are bit-identical and, if not,
the largest difference. On a GPU, XLA may
pick other convolution algorithms or reduce with atomics (``--xla_gpu_deterministic_ops``
makes it repeat; docs/running.md, Determinism).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def environment() -> dict:
  import jax
  info = {'python': sys.version.split()[0], 'platform': platform.platform(),
          'jax_backend': jax.default_backend(),
          'devices': [str(d) for d in jax.devices()],
          'device_kinds': sorted({d.device_kind for d in jax.devices()})}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'torch'):
    try:
      module = __import__(name, fromlist=['__version__'])
      info[name] = getattr(module, '__version__', '?')
    except ImportError:
      info[name] = None
  try:
    import torch
    info['torch_cuda'] = torch.cuda.is_available()
    info['torch_device'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
  except ImportError:
    pass
  return info


def determinism(steps: int, width: int, image_size: int, batch: int,
                model_name: str = 'resnet18') -> dict:
  import jax
  import numpy as np
  from jaxunlearn import losses
  from jaxunlearn.data import load_dataset, make_split
  from jaxunlearn.models import make_model
  from jaxunlearn.objectives import Classifier
  from jaxunlearn.optim import OptimSpec, PairHalf
  from jaxunlearn.step import compiled_forget_step, compiled_train_step, init_state
  from jaxunlearn.train import init_variables
  from jaxunlearn.transforms import set_saliency_mask

  ds = load_dataset('digits', image_size=image_size)
  split = make_split(ds, 'random:10', seed=0)
  model = make_model(model_name, ds.num_classes, width)
  # Host copies: the steps donate their state's buffers, and both runs start from these.
  variables = jax.tree.map(np.asarray, init_variables(model, ds.image_shape, 0))
  rng = np.random.default_rng(0)
  batches = [(ds.x_train[idx], ds.y_train[idx], np.ones(batch, np.float32))
             for idx in (rng.choice(split.retain, batch) for _ in range(steps))]
  forget = np.resize(split.forget, batch)
  fargs = (ds.x_train[forget], ds.y_train[forget], np.ones(batch, np.float32))
  mask = jax.tree.map(lambda p: (np.arange(p.size) % 2).reshape(p.shape).astype(np.float32),
                      variables['params'])

  key = jax.random.key(0)
  sgd = OptimSpec(lr=0.01)
  plain = compiled_train_step(Classifier(model, losses.cross_entropy), sgd)
  salun_cfg = OptimSpec(lr=0.013, saliency=True)
  salun = compiled_train_step(Classifier(model, losses.random_label_cross_entropy), salun_cfg)
  fs = OptimSpec(lr=0.01, schedule='cosine', total_steps=steps, every=1, forget_weight=25.0,
                 forget_schedule='cosine', forget_clip_norm=7.0, saliency=True)
  forget_step = compiled_forget_step(Classifier(model, losses.AdaptiveGradientAscent(0.5)),
                                     Classifier(model, losses.cross_entropy), PairHalf(fs, 0))

  def masked(state):
    return state._replace(opt_state=set_saliency_mask(state.opt_state, mask))

  def run_once():
    st = init_state(variables, sgd())
    for b in batches:
      st, _ = plain(st, *b, key)
    st = masked(init_state({'params': st.params, **st.model_state}, salun_cfg()))
    for i in range(steps):
      st, _ = salun(st, *fargs, jax.random.fold_in(key, i))
    st = masked(init_state({'params': st.params, **st.model_state}, PairHalf(fs, 0)()))
    for i in range(steps):
      st, _ = forget_step(st, fargs, None, jax.random.fold_in(key, i))
    return [np.asarray(x) for x in jax.tree.leaves((st.params, st.model_state))]

  start = time.perf_counter()
  first, second = run_once(), run_once()
  diffs = [float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(first, second)]
  return {'model': model_name, 'steps_each': steps, 'width': width, 'image_size': image_size, 'batch': batch,
          'bit_identical': all(np.array_equal(a, b) for a, b in zip(first, second)),
          'max_abs_difference': max(diffs), 'seconds': time.perf_counter() - start}


def collect(directory: Path) -> dict:
  """Every ``*.json`` in ``directory`` under its stem, and the last lines of every ``*.log``
  (a step that failed or ran out of time says so there)."""
  out = {}
  for path in sorted(directory.glob('*.json')):
    if path.name == 'device_check.json':
      continue
    try:
      out[path.stem] = json.loads(path.read_text())
    except ValueError as e:
      out[path.stem] = {'error': f'unreadable: {e}'}
  out['logs'] = {p.stem: p.read_text(errors='replace').splitlines()[-15:]
                 for p in sorted(directory.glob('*.log'))}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='what', required=True)
  env = sub.add_parser('env')
  env.add_argument('--json', default=None, help='also write the result here')
  det = sub.add_parser('determinism')
  det.add_argument('--json', default=None, help='also write the result here')
  det.add_argument('--model', default='resnet18', choices=['resnet18', 'resnet10', 'resnet1'])
  det.add_argument('--steps', type=int, default=20)
  det.add_argument('--width', type=int, default=64)
  det.add_argument('--image-size', type=int, default=32)
  det.add_argument('--batch', type=int, default=256)
  col = sub.add_parser('collect')
  col.add_argument('directory', type=Path)
  args = parser.parse_args()
  if args.what == 'env':
    result = environment()
  elif args.what == 'determinism':
    result = determinism(args.steps, args.width, args.image_size, args.batch, args.model)
  else:
    result = collect(args.directory)
  text = json.dumps(result, indent=1, default=str)
  print(text)
  if getattr(args, 'json', None):
    Path(args.json).write_text(text)


if __name__ == '__main__':
  main()
