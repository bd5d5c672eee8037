"""Time of sampling with classifier-free guidance as one compiled program.

    python experiments/bench_sampling.py [--images 64] [--steps 50] [--size 8]
                                         [--channels 32,64] [--unroll 1,5,50]

Builds the digits class-conditional UNet2D (random weights: the time does not depend
on them), compiles ``make_sampler`` (DDIM, guidance 2) once per ``--unroll`` and prints
the compile time and the median time of a whole sampling call (64 images, 50 steps: one
dispatch). ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from jaxunlearn.diffusion import linear_schedule, make_sampler
from jaxunlearn.diffusion.train import init_unet
from jaxunlearn.models import digits_unet


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=64)
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--size', type=int, default=8)
  parser.add_argument('--channels', default='32,64')
  parser.add_argument('--unroll', default='1,5')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()

  model = digits_unet([int(c) for c in args.channels.split(',')])
  variables = init_unet(model, (args.size, args.size, 1))
  labels = jnp.arange(args.images) % 10
  out = {}
  print(f'{args.images} images {args.size}x{args.size}, {args.steps} DDIM steps, guidance 2, '
        f'UNet {args.channels}, {jax.devices()[0].platform}')
  for unroll in [int(u) for u in args.unroll.split(',')]:
    sampler = make_sampler(model, linear_schedule(), (args.images, args.size, args.size, 1),
                           num_steps=args.steps, guidance_scale=2.0, null_class=10,
                           unroll=unroll)
    start = time.perf_counter()
    jax.block_until_ready(sampler(variables, jax.random.key(0), labels))
    first = time.perf_counter() - start
    times = []
    for r in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(sampler(variables, jax.random.key(r + 1), labels))
      times.append(time.perf_counter() - start)
    run = statistics.median(times)
    out[f'unroll={unroll}'] = {'compile_and_first_s': first, 'sample_s': run}
    print(f'  unroll {unroll:3d}: first call (compile) {first:7.2f} s, then {run:7.3f} s per '
          f'call ({run / args.steps * 1e3:.1f} ms per step)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'config': vars(args), 'results': out}, f, indent=1)


if __name__ == '__main__':
  main()
