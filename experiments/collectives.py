"""What moves between devices in one step under sharded jit: the collectives XLA inserts,
read from the compiled program (HLO), with their sizes.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/collectives.py

For the papers' ResNet-18 (width 64, 32x32, batch 256, 10 classes) and DiT-XL/2 (32x32x4
latents, 1000 classes, batch 32) on 8 devices: a plain training step, the joint
forget/retain step (SalUn's, SFR-on's: two gradients) and one remain-Hessian product
(SFR-on's HVP, LUR's second-order term), with parameters replicated and with
``--shard-params`` (FSDP-style). The programs are compiled from shapes alone (nothing is
allocated); DiT-XL/2's are extrapolated from 1, 2 and 3 blocks (linear, checked). Prints
one line per program and writes JSON.
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
from jaxunlearn.provenance import provenance  # noqa: E402
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


def _programs(name: str, batch: int, mesh: Mesh, parallel: Parallel, layers: int = 28):
  """``{program: (fn, abstract args)}`` for one model: shapes only (``jax.eval_shape``),
  each carrying its sharding, so a model too large for this machine's memory compiles."""
  key = jax.random.key(0)
  if name == 'resnet18':  # the papers' CIFAR-10 ResNet-18
    model = make_model('resnet18', 10, 64)
    x = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
    init = lambda: model.init(key, jnp.zeros((1, 32, 32, 3)), train=False)
    objective = Classifier(model, losses.cross_entropy)
    forget = Classifier(model, losses.random_label_cross_entropy)
    apply = lambda v, x, y: model.apply(v, x, train=False)
    point_loss = lambda out, y: jnp.mean(losses.cross_entropy(out, y))
  else:  # DiT-XL/2 on 32x32x4 latents, 1000 classes, learned variance (facebook/DiT-XL-2-256)
    from jaxunlearn.diffusion.objectives import Denoiser, Denoising
    from jaxunlearn.diffusion.train import DiffusionConfig
    from jaxunlearn.models.dit import dit
    model = dit('DiT-XL/2', out_channels=8, num_layers=layers)
    x = jax.ShapeDtypeStruct((batch, 32, 32, 4), jnp.float32)
    init = lambda: model.init(key, jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,), jnp.int32),
                              jnp.zeros((1,), jnp.int32))
    diffusion = DiffusionConfig(num_timesteps=1000)
    objective = Denoiser(model, diffusion, Denoising())
    forget = Denoiser(model, diffusion, Denoising(-1.0))
    apply = lambda v, x, y: model.apply(v, x, jnp.full(y.shape, 500), y)
    point_loss = lambda out, y: jnp.mean(jnp.square(out))
  variables = jax.eval_shape(init)
  tx = optax.sgd(0.01, momentum=0.9)
  joint = optax.chain(combine_forget_retain(1.0), tx)

  def place(tree, spec=None):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=NamedSharding(mesh, spec if spec is not None
                                                 else parallel._spec(a))), tree)
  rows = PartitionSpec(AXIS)
  data = (place(x, rows), place(jax.ShapeDtypeStruct((batch,), jnp.int32), rows),
          place(jax.ShapeDtypeStruct((batch,), jnp.float32), rows))
  state = lambda t: place(jax.eval_shape(lambda: init_state(init(), t)))

  def hvp(params, model_state, x, y, v):  # one remain-Hessian product (SFR-on, LUR)
    loss = lambda p: point_loss(apply({'params': p, **model_state}, x, y), y)
    return jax.jvp(jax.grad(loss), (params,), (v,))[1]
  placed = place(variables)
  model_state = {k: v for k, v in placed.items() if k != 'params'}
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables['params']))
  return params, {
      'plain step': (functools.partial(train_step, objective=objective, tx=tx),
                     (state(tx), *data, key)),
      'joint forget/retain step': (functools.partial(
          forget_retain_step, forget=forget, retain=objective, tx=joint),
          (state(joint), data, data, key)),
      'Hessian-vector product': (hvp, (placed['params'], model_state, data[0], data[1],
                                       placed['params'])),
  }


def _measure(name, batch, mesh, parallel, layers=None):
  """``params, {program: collectives}`` of one model's compiled programs."""
  params, programs = _programs(name, batch, mesh, parallel, *([layers] if layers else []))
  return params, {program: collectives(jax.jit(fn).lower(*fn_args).compile().as_text())
                  for program, (fn, fn_args) in programs.items()}


def _extrapolated(name, batch, mesh, parallel, layers: int = 28):
  """A transformer's collectives at ``layers`` blocks from compiles with 1, 2 and 3: each
  block adds the same parameters and so the same collectives (checked: the step from 2 to
  3 blocks must equal the one from 1 to 2), and XLA:CPU needs ~10 GiB and many minutes to
  compile DiT-XL/2's 28 unrolled blocks."""
  (p1, c1), (p2, c2), (p3, c3) = (_measure(name, batch, mesh, parallel, n) for n in (1, 2, 3))
  out = {}
  for program in c1:
    out[program] = {}
    for op in c1[program]:
      a, b, c = (found[program].get(op, {'count': 0, 'bytes': 0}) for found in (c1, c2, c3))
      for field in ('count', 'bytes'):
        if c[field] - b[field] != b[field] - a[field]:
          raise RuntimeError(f'{program} {op} {field} is not linear in the blocks: '
                             f'{a[field]}, {b[field]}, {c[field]}')
      out[program][op] = {f: a[f] + (layers - 1) * (b[f] - a[f]) for f in ('count', 'bytes')}
  return p1 + (layers - 1) * (p2 - p1), out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='resnet18,dit-xl2',
                      help='resnet18 (batch 256) and/or dit-xl2 (batch 32)')
  parser.add_argument('--json', default=None, help='also write the collectives here')
  args = parser.parse_args()
  results = []
  for name in args.models.split(','):
    batch = {'resnet18': 256, 'dit-xl2': 32}[name]
    rows = []
    for shard_params in (False, True):
      parallel = Parallel('shard', 8, shard_params=shard_params)
      mesh = Mesh(np.asarray(parallel.devices), (AXIS,))
      measure = _extrapolated if name == 'dit-xl2' else _measure
      params, found = measure(name, batch, mesh, parallel)
      for program, ops in found.items():
        rows.append({'program': program, 'shard_params': shard_params, 'collectives': ops})
        total = sum(v['bytes'] for v in ops.values())
        print(f'{name} {program:26s} shard_params={shard_params!s:5s} '
              + ', '.join(f'{op} x{v["count"]} {v["bytes"] / 2**20:.1f} MiB'
                          for op, v in sorted(ops.items()))
              + f' | total {total / 2**20:.1f} MiB; params {params * 4 / 2**20:.1f} MiB',
              flush=True)
    results.append({'model': name, 'batch': batch, 'devices': 8, 'params': params,
                    'rows': rows, **({'extrapolated_from_blocks': [1, 2, 3]}
                                     if name == 'dit-xl2' else {})})
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'models': results, 'provenance': provenance(vars(args))}, f, indent=1)


if __name__ == '__main__':
  main()
