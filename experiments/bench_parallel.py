"""Step time on one device against the same global batch split over N (pmap, sharded jit).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/bench_parallel.py
        [--width 16] [--image-size 16] [--batch 128] [--devices 8] [--json out.json]

Times, in one process and interleaved (median over repeats), three steps on the same global
batch: SalUn's masked RL step (``train_step``), SFR-on's forget step and a second-order LUR
step, each with ``Parallel('none')``, ``Parallel('pmap', N)`` and ``Parallel('shard', N)``.
Prints milliseconds, examples per second and each mode's speed-up over one device. With
fake CPU devices on a few cores there is nothing to gain (the devices share the cores);
on N accelerators this is the scaling.
"""

from __future__ import annotations

import argparse

import jax

from jaxunlearn import losses
from jaxunlearn.parallel import Parallel
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import salun_mask
from jaxunlearn.step import (compiled_forget_retain_step, compiled_forget_step,
                             compiled_train_step, init_state)
from jaxunlearn.optim import OptimSpec, PairHalf
from jaxunlearn.transforms import set_saliency_mask

from bench_common import add_model_args, median_ms, model_and_batches, report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.add_argument('--devices', type=int, default=jax.local_device_count())
  args = parser.parse_args()

  model, variables, (xf, yf), (xr, yr), w = model_and_batches(args)
  key = jax.random.key(0)
  mask = salun_mask(Classifier(model, losses.gradient_ascent, train=False), variables, xf, yf, 0.5, args.batch)
  salun_cfg = OptimSpec(lr=0.01, saliency=True)
  sfron_cfg = PairHalf(OptimSpec(lr=0.01, schedule='cosine', total_steps=1000, every=5, forget_weight=25.0,
                                 forget_schedule='cosine', forget_clip_norm=7.0, saliency=False), 0)
  lur_cfg = OptimSpec(lr=0.01, forget_weight=1.0, lookahead_lr=0.01,
                        lookahead_order='second')
  rl = losses.random_label_cross_entropy
  modes = {'none': Parallel('none'), 'pmap': Parallel('pmap', args.devices),
           'shard': Parallel('shard', args.devices)}
  fargs, rargs = (xf, yf, w), (xr, yr, w)

  def cases(par):
    def state(cfg, with_mask=False):
      st = init_state(variables, cfg())
      if with_mask:
        st = st._replace(opt_state=set_saliency_mask(st.opt_state, mask))
      return par.put(st)

    salun = compiled_train_step(Classifier(model, rl), salun_cfg, par)
    sfron = compiled_forget_step(Classifier(model, losses.AdaptiveGradientAscent(0.5)), Classifier(model, losses.cross_entropy),
                                 sfron_cfg, par)
    lur = compiled_forget_retain_step(Classifier(model, rl), Classifier(model, losses.cross_entropy), lur_cfg, par)
    states = {'salun': state(salun_cfg, True), 'sfron_forget': state(sfron_cfg),
              'lur_second': state(lur_cfg)}
    calls = {'salun': lambda s: salun(s, *fargs, key),
             'sfron_forget': lambda s: sfron(s, fargs, None, key),
             'lur_second': lambda s: lur(s, fargs, rargs, key)}

    def run(name):
      def call():
        states[name], _ = calls[name](states[name])
        return states[name]
      return call
    return {name: run(name) for name in calls}

  all_cases = {(m, name): fn for m, par in modes.items() for name, fn in cases(par).items()}
  ms = {f'{m}/{name}': t for (m, name), t in
        median_ms(all_cases, args.steps, args.repeats).items()}
  report(args, ms, {f'{m}/{name} speed-up over none': ms[f'none/{name}'] / ms[f'{m}/{name}']
                    for m in modes if m != 'none' for name in ('salun', 'sfron_forget', 'lur_second')})
  for name in ('salun', 'sfron_forget', 'lur_second'):
    print(f"  {name}: examples/s " + ', '.join(
        f"{m} {args.batch / ms[f'{m}/{name}'] * 1e3:.1f}" for m in modes))

if __name__ == '__main__':
  main()
