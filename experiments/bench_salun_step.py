"""Cost of a SalUn step against a plain gradient step on the same batches.

    python experiments/bench_salun_step.py [--width 16] [--image-size 16] [--batch 128]

Times, in one process and interleaved, the compiled steps of
  - joint:       forget (random-label CE) + retain (CE) gradients, combined, SGD
                 vs the same with ``mask_by_saliency(freeze=True)`` wrapping SGD (salun_joint);
  - alternating: one SGD step on a random-label forget batch
                 vs the same step masked (salun, as the reference runs it).
Prints the median milliseconds per step and the ratio SalUn / plain; ``--json`` writes them.
"""

from __future__ import annotations

import argparse

import jax

from jaxunlearn import losses
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import salun_mask
from jaxunlearn.step import compiled_forget_retain_step, compiled_train_step, init_state
from jaxunlearn.optim import OptimSpec
from jaxunlearn.transforms import set_saliency_mask

from bench_common import add_model_args, median_ms, model_and_batches, report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  args = parser.parse_args()

  model, variables, (xf, yf), (xr, yr), w = model_and_batches(args)
  b = args.batch
  key = jax.random.key(0)
  mask = salun_mask(Classifier(model, losses.gradient_ascent, train=False), variables, xf, yf, 0.5, b)

  def state_for(optim):
    st = init_state(variables, optim())
    if optim.saliency:
      st = st._replace(opt_state=set_saliency_mask(st.opt_state, mask))
    return st

  cases = {}
  for saliency in (False, True):
    joint = OptimSpec(lr=0.01, forget_weight=1.0, saliency=saliency)
    alt = OptimSpec(lr=0.01, saliency=saliency)
    cases[('joint', saliency)] = (
        compiled_forget_retain_step(Classifier(model, losses.random_label_cross_entropy),
                                    Classifier(model, losses.cross_entropy), joint),
        state_for(joint), ((xf, yf, w), (xr, yr, w), key))
    cases[('alternating', saliency)] = (
        compiled_train_step(Classifier(model, losses.random_label_cross_entropy), alt), state_for(alt),
        (xf, yf, w, key))
  def case(k):
    fn, _, fargs = cases[k]
    state = {'s': cases[k][1]}

    def call():
      state['s'], _ = fn(state['s'], *fargs)
      return state['s']
    return call

  ms = median_ms({f"{kind}{'_salun' if sal else ''}": case((kind, sal)) for kind, sal in cases},
                 args.steps, args.repeats)
  report(args, ms, {f'{kind}: salun / plain': ms[f'{kind}_salun'] / ms[kind]
                    for kind in ('joint', 'alternating')})

if __name__ == '__main__':
  main()
