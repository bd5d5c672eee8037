"""Cost of resumable runs: a loop checkpoint's save and restore against a training step.

    python experiments/bench_checkpoint.py [--width 16] [--image-size 16] [--batch 128]
                                           [--every 50]

Saves and restores the state of a SalUn loop (ResNet-18 params, BatchNorm statistics,
momentum and the saliency mask, plus a JSON record with 1,000 losses) with
:class:`jaxunlearn.checkpoint.LoopCheckpoint`, times one masked SalUn step, and prints
the milliseconds and the share of a run's time that saving every ``--every`` steps costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax

from jaxunlearn import losses
from jaxunlearn.checkpoint import LoopCheckpoint
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import salun_mask
from jaxunlearn.step import compiled_train_step, init_state
from jaxunlearn.optim import OptimSpec
from jaxunlearn.transforms import set_saliency_mask

from bench_common import add_model_args, median_ms, model_and_batches, report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.add_argument('--every', type=int, default=50, help='updates between checkpoints')
  args = parser.parse_args()

  model, variables, (xf, yf), _, w = model_and_batches(args)
  optim = OptimSpec(lr=0.01, saliency=True)
  state = init_state(variables, optim())
  state = state._replace(opt_state=set_saliency_mask(
      state.opt_state, salun_mask(Classifier(model, losses.gradient_ascent, train=False), variables, xf, yf, 0.5, args.batch)))
  step = compiled_train_step(Classifier(model, losses.random_label_cross_entropy), optim)
  key = jax.random.key(0)
  box = {'s': jax.device_put(state)}

  def one_step():
    box['s'], metrics = step(box['s'], xf, yf, w, key)
    return metrics['loss']

  ms = median_ms({'masked SalUn step': one_step}, args.steps, args.repeats)
  host = jax.device_get(box['s'])
  record = {'history': {'forget': [0.5] * 1000}, 'seconds': 0.0, 'overhead_seconds': 0.0}
  saves, restores = [], []
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = LoopCheckpoint(tmp, every=args.every)
    for n in range(1, args.repeats + 2):
      start = time.perf_counter()
      ckpt.save(n, host, record)
      saves.append(time.perf_counter() - start)
      start = time.perf_counter()
      restored = LoopCheckpoint(tmp).restore(host)
      restores.append(time.perf_counter() - start)
      assert restored[0] == n
  ms['checkpoint save'] = statistics.median(saves[1:]) * 1e3  # the first opens the manager
  ms['checkpoint restore'] = statistics.median(restores[1:]) * 1e3
  megabytes = sum(x.nbytes for x in jax.tree.leaves(host)) / 2**20
  print(f'state: {megabytes:.1f} MiB in {len(jax.tree.leaves(host))} arrays')
  report(args, ms, {f'save / ({args.every} steps)':
                    ms['checkpoint save'] / (args.every * ms['masked SalUn step'])})


if __name__ == '__main__':
  main()
