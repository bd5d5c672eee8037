"""Cost of SFR-on's steps and of a Hessian-vector product, against plain gradients.

    python experiments/bench_sfron_step.py [--width 16] [--image-size 16] [--batch 128]
                                           [--every 5] [--json out.json]

Times, in one process and interleaved (median over repeats), on the same batches:
  - plain:        a compiled SGD step on a CE gradient (the unit of "one gradient step");
  - sfron_forget: SFR-on's forget step (adaptive weighted ascent, x alpha_t, Fisher mask,
                  global-norm clip, shared SGD);
  - sfron_retain: SFR-on's retain step (CE, the shared SGD through ``hold``);
  - iteration:    one fast-slow block, 1 forget + K retain steps, against K+1 plain steps
                  (the gradient evaluations it needs);
  - grad / hvp:   the compiled gradient of the retain loss, and a forward-over-reverse
                  Hessian-vector product ``jvp(grad(L), (p,), (v,))`` of the same loss;
  - hvps_in_solve: ``linearize(grad(L))`` once and ``--solver-iters`` products, as the
                  preconditioner runs them; its cost per product beyond one gradient;
  - hvp_step:     an ``sfron_hvp`` forget step with ``--solver-iters`` CG iterations.
Prints milliseconds and ratios; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from jaxunlearn import losses
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import sfron_mask
from jaxunlearn.step import compiled_forget_step, compiled_train_step, init_state
from jaxunlearn.optim import OptimSpec, PairHalf
from jaxunlearn.transforms import set_saliency_mask

from bench_common import add_model_args, median_ms, model_and_batches, report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.add_argument('--every', type=int, default=5)
  parser.add_argument('--solver-iters', type=int, default=5)
  args = parser.parse_args()

  model, variables, (xf, yf), (xr, yr), w = model_and_batches(args)
  b = args.batch
  key = jax.random.key(0)
  mask = sfron_mask(Classifier(model, losses.cross_entropy, train=False), variables, xf, yf, xr, yr, 1.0, b)

  plain_cfg = OptimSpec(lr=0.01)
  fs = OptimSpec(lr=0.01, schedule='cosine', total_steps=1000, every=args.every, forget_weight=25.0,
                 forget_schedule='cosine', forget_clip_norm=7.0, saliency=True)
  hvp_cfg = dataclasses.replace(fs, precondition='cg', solver_iters=args.solver_iters, every=1)
  adaptive = losses.AdaptiveGradientAscent(0.5)
  plain = compiled_train_step(Classifier(model, losses.cross_entropy), plain_cfg)
  f_step = compiled_forget_step(Classifier(model, adaptive), Classifier(model, losses.cross_entropy), PairHalf(fs, 0))
  r_step = compiled_train_step(Classifier(model, losses.cross_entropy), PairHalf(fs, 1))
  h_step = compiled_forget_step(Classifier(model, adaptive), Classifier(model, losses.cross_entropy), PairHalf(hvp_cfg, 0))

  def with_mask(cfg):
    st = init_state(variables, cfg())
    return st._replace(opt_state=set_saliency_mask(st.opt_state, mask))

  # Each step donates its input state, so each case threads its own state through.
  states = {'plain': init_state(variables, plain_cfg()), 'fs': with_mask(PairHalf(fs, 0)),
            'hvp_step': with_mask(PairHalf(hvp_cfg, 0))}

  def run(name, fn):
    def call():
      states[name], _ = fn(states[name])
      return states[name]
    return call

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, xr, train=True,
                            mutable=['batch_stats'])
    return losses.cross_entropy(logits, yr).mean()

  grad = jax.jit(jax.grad(loss))
  hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])

  def solve_products(p, v):  # what a solve does: linearize once, ``solver_iters`` products
    _, product = jax.linearize(jax.grad(loss), p)
    for _ in range(args.solver_iters):
      v = product(v)
    return v

  solve_products = jax.jit(solve_products)
  params = variables['params']
  direction = jax.tree.map(lambda p: np.ones_like(p) * 1e-3, params)
  fargs, rargs = (xf, yf, w), (xr, yr, w)

  def iteration():
    states['fs'], _ = f_step(states['fs'], fargs, None, key)
    for _ in range(args.every):
      states['fs'], _ = r_step(states['fs'], *rargs, key)
    return states['fs']

  cases = {
      'plain': run('plain', lambda s: plain(s, *rargs, key)),
      'sfron_forget': run('fs', lambda s: f_step(s, fargs, None, key)),
      'sfron_retain': run('fs', lambda s: r_step(s, *rargs, key)),
      'iteration': iteration,
      'grad': lambda: grad(params),
      'hvp': lambda: hvp(params, direction),
      'hvps_in_solve': lambda: solve_products(params, direction),
      'hvp_step': run('hvp_step', lambda s: h_step(s, fargs, rargs, key)),
  }
  ms = median_ms(cases, args.steps, args.repeats)
  k = args.every
  ratios = {
      'forget_step / plain': ms['sfron_forget'] / ms['plain'],
      'retain_step / plain': ms['sfron_retain'] / ms['plain'],
      f'iteration block (1 forget + {k} retain) / {k + 1} plain':
          ms['iteration'] / ((k + 1) * ms['plain']),
      'hvp / grad': ms['hvp'] / ms['grad'],
      f'hvp in a solve / grad ({args.solver_iters} products after one linearize)':
          (ms['hvps_in_solve'] - ms['grad']) / args.solver_iters / ms['grad'],
      f'hvp_step ({args.solver_iters} CG) / plain': ms['hvp_step'] / ms['plain'],
  }
  report(args, ms, ratios)

if __name__ == '__main__':
  main()
