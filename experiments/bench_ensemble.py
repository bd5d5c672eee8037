"""N models trained side by side (``jax.vmap`` over seeds) vs one after another.

    python experiments/bench_ensemble.py [--models 8] [--epochs 2] [--width 16]
                                         [--image-size 8] [--json out.json]

Trains ``--models`` digits classifiers (ResNet-18 of ``--width``, the job's recipe) twice:
as one ensemble (``Parallel.ensemble(N)``: each step one compiled program for all N
models) and as N sequential ``train_classifier`` calls (one compiled step reused). Each
way is timed twice, and the second run is reported (the first includes compilation,
printed separately). Prints the wall times, the ratio, and the models' test accuracies.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from jaxunlearn.data import load_digits
from jaxunlearn.models import make_model
from jaxunlearn.parallel import Parallel
from jaxunlearn.step import predict
from jaxunlearn.train import TrainConfig, train_classifier


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', type=int, default=8)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image-size', type=int, default=8)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()

  ds = load_digits(args.image_size)
  model = make_model('resnet18', ds.num_classes, args.width)
  config = TrainConfig(epochs=args.epochs)
  seeds = tuple(range(args.models))

  def ensemble():
    return train_classifier(model, ds.x_train, ds.y_train, config, seeds,
                            parallel=Parallel.ensemble(len(seeds)), progress=False)

  def sequential():
    return [train_classifier(model, ds.x_train, ds.y_train, config, s, progress=False)
            for s in seeds]

  times = {}
  for name, fn in (('vmap', ensemble), ('sequential', sequential)):
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    start = time.perf_counter()
    out = fn()
    times[name] = {'first_s': first, 'warm_s': time.perf_counter() - start}
    variables = out if name == 'vmap' else None
    if name == 'vmap':
      logits = predict(model, variables, ds.x_test, parallel=Parallel.ensemble(len(seeds)))
    else:
      logits = np.stack([predict(model, v, ds.x_test) for v in out])
    times[name]['test_accuracy'] = [float(a) for a in
                                    (logits.argmax(-1) == ds.y_test).mean(-1) * 100]
    print(f'{name:10s} first run {first:7.1f} s   warm {times[name]["warm_s"]:7.1f} s   '
          f'test acc {np.mean(times[name]["test_accuracy"]):.1f} '
          f'(min {min(times[name]["test_accuracy"]):.1f})')
  ratio = times['sequential']['warm_s'] / times['vmap']['warm_s']
  print(f'{args.models} models, {args.epochs} epochs, width {args.width}: vmap is '
        f'{ratio:.2f}x the speed of the loop (warm)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'args': vars(args), 'times': times, 'speedup': ratio}, f, indent=1)


if __name__ == '__main__':
  main()
