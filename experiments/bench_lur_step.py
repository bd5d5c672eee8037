"""Cost of LUR's look-ahead steps against a plain gradient step.

    python experiments/bench_lur_step.py [--width 16] [--image-size 16] [--batch 128]
                                         [--json out.json]

Times, in one process and interleaved (median over repeats), on the same batches:
  - plain:      a compiled SGD step on the CE gradient of the retain batch (one gradient);
  - joint:      a joint step ``w_u g_U + w_r g_R`` (``combine_forget_retain``, two gradients),
                SalUn's objective as one step;
  - lur_first:  a LUR step, ``order='first'``: ``w_r g_R + w_u grad L_U(theta - eta g_R)``;
  - lur_second: a LUR step, ``order='second'``: also ``- eta H_R grad L_U(theta')`` by one
                forward-over-reverse Hessian-vector product.
The LUR steps use the random-label forget loss, as the ``lur`` method. Prints milliseconds
and each step's ratio to ``plain``; ``--json`` writes them.
"""

from __future__ import annotations

import argparse

import jax

from jaxunlearn import losses
from jaxunlearn.objectives import Classifier
from jaxunlearn.step import compiled_forget_retain_step, compiled_train_step, init_state
from jaxunlearn.optim import OptimSpec

from bench_common import add_model_args, median_ms, model_and_batches, report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.add_argument('--inner-lr', type=float, default=0.01)
  args = parser.parse_args()

  model, variables, (xf, yf), (xr, yr), w = model_and_batches(args)
  key = jax.random.key(0)
  forget_loss, retain_loss = losses.random_label_cross_entropy, losses.cross_entropy
  configs = {
      'plain': OptimSpec(lr=0.01),
      'joint': OptimSpec(lr=0.01, forget_weight=1.0),
      'lur_first': OptimSpec(lr=0.01, forget_weight=1.0, lookahead_lr=args.inner_lr,
                               lookahead_order='first'),
      'lur_second': OptimSpec(lr=0.01, forget_weight=1.0, lookahead_lr=args.inner_lr,
                                lookahead_order='second'),
  }
  # Each step donates its input state, so each case threads its own state through.
  states = {name: init_state(variables, cfg()) for name, cfg in configs.items()}
  fargs, rargs = (xf, yf, w), (xr, yr, w)

  def case(name):
    cfg = configs[name]
    if name == 'plain':
      step = compiled_train_step(Classifier(model, retain_loss), cfg)
      call = lambda s: step(s, *rargs, key)
    else:
      step = compiled_forget_retain_step(Classifier(model, forget_loss), Classifier(model, retain_loss), cfg)
      call = lambda s: step(s, fargs, rargs, key)

    def run():
      states[name], _ = call(states[name])
      return states[name]
    return run

  cases = {name: case(name) for name in configs}
  ms = median_ms(cases, args.steps, args.repeats)
  report(args, ms, {f'{name} / plain': ms[name] / ms['plain'] for name in ms if name != 'plain'})

if __name__ == '__main__':
  main()
