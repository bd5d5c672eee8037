"""Every convolution of a ResNet-18, lowered by XLA and as an im2col product, forward and
with its gradients: the measurements behind ``jaxunlearn.models.conv``'s 'auto' rule.

    python experiments/bench_conv.py [--width 16] [--image-size 16] [--batch 128]
    python experiments/bench_conv.py --width 64 --image-size 32 --batch 64

Per distinct convolution (input map, channels in and out, kernel, stride): median
milliseconds of the forward pass and of the gradients with respect to input and kernel
(of a fixed linear function of the output), for ``lax.conv_general_dilated`` ('xla') and
the im2col product ('im2col'), their ratio, what 'auto' picks, and the largest difference
between the two outputs. Then the totals over the network (each convolution counted as
often as the network has it) for xla, im2col and auto. ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.models import conv as conv_lib

from bench_common import median_ms


def resnet18_convs(width: int, image_size: int):
  """``[(map, cin, cout, kernel, stride, count)]``: ResNet-18's (CIFAR stem) convolutions."""
  rows = {}
  add = lambda *key: rows.__setitem__(key, rows.get(key, 0) + 1)
  size, cin = image_size, 3
  add(size, cin, width, 3, 1)
  cin = width
  for stage in range(4):
    cout = width * 2**stage
    for block in range(2):
      stride = 2 if stage > 0 and block == 0 else 1
      add(size, cin, cout, 3, stride)
      if stride != 1 or cin != cout:
        add(size, cin, cout, 1, stride)
      size //= stride
      add(size, cout, cout, 3, 1)
      cin = cout
  return [(*key, count) for key, count in rows.items()]


def timed_ms(fn, *args, repeats: int) -> float:
  """Median milliseconds of one call (``bench_common.median_ms``, one call per repeat)."""
  return median_ms({'call': lambda: fn(*args)}, steps=1, repeats=repeats)['call']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image-size', type=int, default=16)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=15)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  rows, totals = [], {'xla': 0.0, 'im2col': 0.0, 'auto': 0.0}
  print(f'ResNet-18 width {args.width}, {args.image_size}x{args.image_size}, batch {args.batch}, '
        f'{jax.devices()[0].platform}; forward / forward+gradients, median ms of {args.repeats}')
  for size, cin, cout, kernel, stride, count in resnet18_convs(args.width, args.image_size):
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)) / np.sqrt(kernel**2 * cin),
                    jnp.float32)
    pad = ((kernel // 2, kernel // 2),) * 2
    row = {'map': size, 'cin': cin, 'cout': cout, 'kernel': kernel, 'stride': stride,
           'count': count}
    outputs = {}
    for mode in ('xla', 'im2col'):
      conv_lib.set_cpu_conv(mode)
      conv = lambda x, w: conv_lib.conv_general_dilated(
          x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      forward = jax.jit(conv)
      outputs[mode] = forward(x, w)
      probe = jnp.asarray(rng.normal(size=outputs[mode].shape), jnp.float32)
      grads = jax.jit(jax.grad(lambda x, w: jnp.vdot(conv(x, w), probe), argnums=(0, 1)))
      row[mode] = (timed_ms(forward, x, w, repeats=args.repeats),
                   timed_ms(grads, x, w, repeats=args.repeats))
    conv_lib.set_cpu_conv(None)
    out = size // stride
    row['auto'] = 'im2col' if conv_lib.prefers_im2col((kernel, kernel), cin, (out, out)) else 'xla'
    row['max_difference'] = float(jnp.max(jnp.abs(outputs['xla'] - outputs['im2col'])))
    for mode in ('xla', 'im2col'):
      totals[mode] += count * row[mode][1]
    totals['auto'] += count * row[row['auto']][1]
    rows.append(row)
    print(f'  {size:3d}x{size:<3d} {cin:4d}->{cout:<4d} {kernel}x{kernel} /{stride} x{count}   '
          f'xla {row["xla"][0]:7.2f} / {row["xla"][1]:7.2f}   '
          f'im2col {row["im2col"][0]:7.2f} / {row["im2col"][1]:7.2f}   '
          f'xla/im2col {row["xla"][1] / row["im2col"][1]:5.2f}   auto: {row["auto"]:6s} '
          f'|diff| {row["max_difference"]:.1e}')
  print('network total, forward+gradients (ms): ' +
        ', '.join(f'{k} {v:.1f}' for k, v in totals.items()))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'config': vars(args), 'platform': jax.devices()[0].platform, 'rows': rows,
                 'totals_ms': totals}, f, indent=1)


if __name__ == '__main__':
  main()
