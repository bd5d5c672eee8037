"""What the step benchmarks share: a ResNet-18 on digits and fixed forget/retain batches.

``--model`` picks another registered ResNet (``resnet1``, one block, is what the tests'
smoke runs of the benchmarks use: its steps compile in seconds; its timings mean little)."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from jaxunlearn.data import load_dataset, make_split
from jaxunlearn.models import make_model
from jaxunlearn.provenance import provenance
from jaxunlearn.train import init_variables


def add_model_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--model', default='resnet18', choices=['resnet18', 'resnet10', 'resnet1'])
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image-size', type=int, default=16)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default=None, help='write the timings here')


def model_and_batches(args):
  """``(model, variables, (xf, yf), (xr, yr), w)``: ``args.model`` of ``args.width`` at its
  initialisation, and one forget and one retain batch of ``args.batch`` digits (random:10,
  seed 0; the sets repeated to fill the batch), all weights 1."""
  ds = load_dataset('digits', image_size=args.image_size)
  split = make_split(ds, 'random:10', seed=0)
  model = make_model(args.model, ds.num_classes, args.width)
  variables = init_variables(model, ds.image_shape, 0)
  take = lambda idx: np.resize(idx, args.batch)
  forget = ds.x_train[take(split.forget)], ds.y_train[take(split.forget)]
  retain = ds.x_train[take(split.retain)], ds.y_train[take(split.retain)]
  return model, variables, forget, retain, np.ones(args.batch, np.float32)


def median_ms(cases: dict, steps: int, repeats: int) -> dict:
  """Median milliseconds per call of each ``cases[name]()`` (which returns something to
  await): compiled and warmed up first, then timed ``repeats`` times ``steps`` calls,
  interleaved so that drift hits every case alike."""
  for fn in cases.values():
    jax.block_until_ready(fn())
  times = {}
  for _ in range(repeats):
    for name, fn in cases.items():
      start = time.perf_counter()
      for _ in range(steps):
        out = fn()
      jax.block_until_ready(out)
      times.setdefault(name, []).append((time.perf_counter() - start) / steps)
  return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def report(args, ms: dict, ratios: dict | None = None) -> None:
  """Prints the header, the milliseconds and the ratios; writes ``args.json`` if given."""
  label = args.model.replace('resnet', 'ResNet-')
  print(f'{label} width {args.width}, {args.image_size}x{args.image_size}, batch {args.batch}, '
        f'{jax.local_device_count()} x {jax.devices()[0].platform}, median of '
        f'{args.repeats} x {args.steps} calls')
  width = max(map(len, ms))
  for name, value in ms.items():
    print(f'  {name:{width}s} {value:9.2f} ms')
  if ratios:
    width = max(map(len, ratios))
    for name, value in ratios.items():
      print(f'  {name:{width}s} {value:.3f}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'config': vars(args), 'platform': jax.devices()[0].platform, 'ms': ms,
                 'ratios': ratios or {}, 'provenance': provenance(vars(args))}, f, indent=1)
