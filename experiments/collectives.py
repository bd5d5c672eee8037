"""What moves between devices in one step under sharded jit: the collectives XLA inserts,
read from the compiled program (HLO), with their sizes.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/collectives.py

For the papers' ResNet-18 (width 64, 32x32, batch 256, 10 classes) on 8 devices: a plain
training step, SalUn's joint step (forget and retain gradients) and one remain-Hessian
product (SFR-on's HVP, LUR's second-order term), with parameters replicated and with
``--shard-params`` (FSDP-style). Prints one line per program and writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from jaxunlearn import losses  # noqa: E402
from jaxunlearn.models import make_model  # noqa: E402
from jaxunlearn.objectives import Classifier  # noqa: E402
from jaxunlearn.parallel import AXIS, Parallel  # noqa: E402
from jaxunlearn.step import forget_retain_step, init_state, train_step  # noqa: E402
from jaxunlearn.transforms import combine_forget_retain  # noqa: E402

_OPS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_LINE = re.compile(r'=\s*(.*?)\s(' + '|'.join(_OPS) + r')(?:-start)?\(')
_ARRAY = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\]')
_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 's8': 1, 'u8': 1,
          'f64': 8, 's64': 8, 'u64': 8}


def collectives(hlo: str) -> dict:
  """``{op: {'count', 'bytes'}}`` of the collectives in an optimized HLO module: each op's
  result (an array, or a tuple of the arrays XLA combined into one op), summed."""
  out = {}
  for line in hlo.splitlines():
    m = _LINE.search(line)
    if not m or '-done(' in line:
      continue
    size = sum(int(np.prod([int(d) for d in dims.split(',') if d] or [1])) * _BYTES[dtype]
               for dtype, dims in _ARRAY.findall(m.group(1)) if dtype in _BYTES)
    entry = out.setdefault(m.group(2), {'count': 0, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += size
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--image-size', type=int, default=32)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--out', default='experiments/results/collectives.json')
  args = parser.parse_args()
  model = make_model('resnet18', 10, args.width)
  x = jnp.zeros((args.batch, args.image_size, args.image_size, 3))
  y, w = jnp.zeros(args.batch, jnp.int32), jnp.ones(args.batch)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables['params']))
  objective = Classifier(model, losses.cross_entropy)
  tx = optax.sgd(0.01, momentum=0.9)
  rows = []
  for shard_params in (False, True):
    parallel = Parallel('shard', 8, shard_params=shard_params)
    mesh = Mesh(np.asarray(parallel.devices), (AXIS,))
    rows_sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    batch = jax.device_put((x, y, w), rows_sharding)
    key = jax.random.key(0)
    joint = optax.chain(combine_forget_retain(1.0), tx)
    programs = {
        'plain step': (functools.partial(train_step, objective=objective, tx=tx),
                       (parallel.put(init_state(variables, tx)), *batch, key)),
        'SalUn joint step': (functools.partial(
            forget_retain_step, forget=Classifier(model, losses.random_label_cross_entropy),
            retain=objective, tx=joint),
            (parallel.put(init_state(variables, joint)), batch, batch, key)),
    }

    def hvp(params, model_state, x, y, v):  # one remain-Hessian product (SFR-on, LUR)
      def loss(p):
        logits = model.apply({'params': p, **model_state}, x, train=False)
        return jnp.mean(losses.cross_entropy(logits, y))
      return jax.jvp(jax.grad(loss), (params,), (v,))[1]
    placed = parallel.put(variables)
    model_state = {k: v for k, v in placed.items() if k != 'params'}
    programs['Hessian-vector product'] = (hvp, (placed['params'], model_state, batch[0],
                                                batch[1], placed['params']))
    for name, (fn, fn_args) in programs.items():
      hlo = jax.jit(fn).lower(*fn_args).compile().as_text()
      found = collectives(hlo)
      rows.append({'program': name, 'shard_params': shard_params, 'collectives': found})
      total = sum(v['bytes'] for v in found.values())
      print(f'{name:22s} shard_params={shard_params!s:5s} '
            + ', '.join(f'{op} x{v["count"]} {v["bytes"] / 2**20:.1f} MiB'
                        for op, v in sorted(found.items()))
            + f' | total {total / 2**20:.1f} MiB; params {params * 4 / 2**20:.1f} MiB')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'model': f'resnet18 width {args.width}', 'image_size': args.image_size,
               'batch': args.batch, 'devices': 8, 'params': params, 'rows': rows}, f,
              indent=1)


if __name__ == '__main__':
  main()
