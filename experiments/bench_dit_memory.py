"""Peak memory of one DiT unlearning step with the remain-Hessian (HVP) variant of SFR-on.

    python experiments/bench_dit_memory.py                      # DiT-XL/2, batch 32
    python experiments/bench_dit_memory.py --remat 0,1 --scan 0,1   # every layout
    python experiments/bench_dit_memory.py --run                # also time it (on a GPU)
    python experiments/bench_dit_memory.py --size tiny --latent 8 --batch 8   # quick check
    python experiments/bench_dit_memory.py --docs-table --json results.json   # docs' table

The step (:func:`step`): the forget loss's gradient (SFR-on's adaptive-weighted ascent on
the denoising loss of the forget batch), preconditioned by ``(H_r + damping I)^-1`` with
``iters`` conjugate-gradient Hessian-vector products of the retain batch's denoising loss
(:func:`jaxunlearn.transforms.precondition_by_remain_hessian`, forward-over-reverse, the
linearisation stored once or, ``--hvp recompute``, recomputed in every product), then
the saliency mask and Adam: the most memory-hungry step of the library, on 256x256 images'
32x32x4 latents (the VAE encodes once, beforehand, and is not in the step).

Without running anything, XLA's compiled memory analysis gives the bytes the step needs
on the backend it is compiled for: arguments (params, Adam moments, mask, batches),
outputs, and temporaries (activations kept for the backward pass and the HVP's
linearisation). The script compiles the step for each setting of ``--remat``, ``--scan``
(the blocks as one ``nn.scan``: the only layout in which XLA cannot hoist remat's
recomputation, see :class:`jaxunlearn.models.dit.DiT`), ``--dtype`` and ``--hvp`` and
prints the peak, ``arguments + outputs - aliased + temporaries``; ``--docs-table`` compiles
instead the settings of docs/generation.md's table (:data:`DOCS_TABLE`: DiT-XL/2's
path from a straightforward port to the default layout, and DiT-S/2's three main steps),
and ``--json`` writes the rows with their provenance. On this
2-core CPU the compiled program is the CPU's (fusion and layouts differ from a GPU's, so
the numbers are an estimate there); ``--run`` executes and times it, reporting the
device's own peak (``memory_stats``) where the backend has one.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.diffusion.objectives import AdaptiveDenoisingAscent, Denoiser, Denoising
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.losses import reduce_loss
from jaxunlearn.models.dit import count_params, dit
from jaxunlearn.provenance import provenance
from jaxunlearn.transforms import mask_by_saliency, precondition_by_remain_hessian

GiB = 2 ** 30

# The settings of the table in docs/generation.md, (size, remat, scan, dtype, hvp, CG
# iterations, unroll): DiT-XL/2 from a straightforward port (blocks unrolled, one stored
# linearisation) to the default (blocks in a remat scan, each product recomputed, the
# products in a loop), then DiT-S/2's unrolled, linearised-in-a-scan and default steps.
DOCS_TABLE = (
    ('DiT-XL/2', False, False, 'float32', 'linearize', 3, 'auto'),
    ('DiT-XL/2', True, False, 'float32', 'linearize', 3, 'auto'),
    ('DiT-XL/2', True, False, 'bfloat16', 'linearize', 3, 'auto'),
    ('DiT-XL/2', True, True, 'float32', 'linearize', 3, 'auto'),
    ('DiT-XL/2', True, True, 'float32', 'recompute', 3, '1'),
    ('DiT-XL/2', True, True, 'float32', 'recompute', 10, '1'),
    ('DiT-XL/2', True, True, 'float32', 'recompute', 3, 'auto'),
    ('DiT-XL/2', True, True, 'float32', 'recompute', 10, 'auto'),
    ('DiT-XL/2', True, True, 'bfloat16', 'recompute', 3, 'auto'),
    ('DiT-S/2', True, False, 'float32', 'recompute', 3, 'auto'),
    ('DiT-S/2', True, True, 'float32', 'linearize', 3, 'auto'),
    ('DiT-S/2', True, True, 'float32', 'recompute', 3, 'auto'),
)


def make_tx(iters: int, recompute: bool, unroll: bool | None = None):
  return optax.chain(precondition_by_remain_hessian(damping=1e-3, iters=iters, recompute=recompute,
                                                    unroll=unroll),
                     mask_by_saliency(freeze=True, inner=optax.adam(1e-4)))


def batch_loss(model, loss, batch, key):
  """``params -> `` the batch's loss as the shared steps reduce it (the objective
  :class:`Denoiser` per example, then :func:`jaxunlearn.losses.reduce_loss`)."""
  denoiser = Denoiser(model, DiffusionConfig(), loss)   # linear schedule, T = 1000
  x, y, w = batch

  def fn(params):
    per_example, _, _ = denoiser(params, {}, x, y, key)
    return reduce_loss(loss, per_example, w)
  return fn


def step(params, opt_state, forget, retain, key, *, model, tx):
  """One masked, remain-Hessian-preconditioned ascent step; the state is donated."""
  null = model.num_class_embeds - 1
  forget_obj = batch_loss(model, AdaptiveDenoisingAscent(0.5, 0.1, null), forget, key)
  retain_obj = batch_loss(model, Denoising(1.0, 0.1, null), retain, jax.random.fold_in(key, 1))
  loss, grads = jax.value_and_grad(forget_obj)(params)
  updates, opt_state = tx.update(grads, opt_state, params, retain_loss_fn=retain_obj)
  return optax.apply_updates(params, updates), opt_state, loss


def setting(args, size: str, remat: bool, scan: bool, dtype: str, hvp: str, iters: int,
            unroll: str):
  model = dit(size, in_channels=4, out_channels=8, sample_size=args.latent,
              num_embeds_ada_norm=1000, remat=remat, scan_blocks=scan, dtype=getattr(jnp, dtype))
  shape = (args.batch, args.latent, args.latent, 4)
  init = lambda: model.init(jax.random.key(0), jnp.zeros(shape), jnp.zeros(args.batch),
                            jnp.zeros(args.batch, jnp.int32))['params']
  params = jax.eval_shape(init)
  tx = make_tx(iters, hvp == 'recompute', {'auto': None, '0': False, '1': True}[unroll])
  opt_state = jax.eval_shape(tx.init, params)
  batch = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((args.batch,), jnp.int32),
           jax.ShapeDtypeStruct((args.batch,), jnp.float32))
  fn = jax.jit(functools.partial(step, model=model, tx=tx),
               donate_argnums=(0, 1))
  return model, init, tx, fn, (params, opt_state, batch, batch, jax.random.key(0))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='DiT-XL/2')
  parser.add_argument('--latent', type=int, default=32, help='latent side (256 px / 8)')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--iters', type=int, default=3, help='CG iterations (HVPs) per step')
  parser.add_argument('--unroll', default='auto', choices=['auto', '0', '1'],
                      help="CG iterations unrolled (1) or in a fori_loop (0); auto: the "
                           "transform's default (a loop with recomputed products)")
  parser.add_argument('--remat', default='1', help='0 and/or 1, comma-separated')
  parser.add_argument('--scan', default='1', help='scan over the blocks: 0 and/or 1')
  parser.add_argument('--dtype', default='float32', help='float32 and/or bfloat16')
  parser.add_argument('--hvp', default='recompute,linearize',
                      help="'linearize' (one stored linearisation reused by every product) "
                           "and/or 'recompute' (each product recomputes the remain pass)")
  parser.add_argument('--docs-table', action='store_true',
                      help="compile the settings of docs/generation.md's table (DOCS_TABLE) "
                           'instead of those of --size, --remat, --scan, --dtype, --hvp, '
                           '--iters, --unroll')
  parser.add_argument('--run', action='store_true', help='execute and time the step too')
  parser.add_argument('--json', default=None,
                      help='write {"rows": [...], "provenance": {...}} here')
  args = parser.parse_args()
  flags = lambda v: [bool(int(r)) for r in v.split(',')]
  settings = DOCS_TABLE if args.docs_table else [
      (args.size, remat, scan, dtype, hvp, args.iters, args.unroll)
      for remat, scan in itertools.product(flags(args.remat), flags(args.scan))
      for dtype, hvp in itertools.product(args.dtype.split(','), args.hvp.split(','))]
  for *_, dtype, hvp, _, _ in settings:
    if hvp not in ('linearize', 'recompute'):
      parser.error(f"--hvp takes 'linearize' and/or 'recompute', got {hvp!r}")
    if dtype not in ('float32', 'bfloat16'):
      parser.error(f"--dtype takes 'float32' and/or 'bfloat16', got {dtype!r}")
  rows = []
  for size, remat, scan, dtype, hvp, iters, unroll in settings:
    model, init, tx, fn, abstract = setting(args, size, remat, scan, dtype, hvp, iters, unroll)
    row = {'size': size, 'batch': args.batch, 'latent': args.latent, 'remat': remat,
           'scan': scan, 'dtype': dtype, 'hvp': hvp, 'cg_iters': iters, 'unroll': unroll,
           'params_M': count_params(abstract[0]) / 1e6, **compiled_memory(fn, abstract)}
    if args.run:
      row.update(_run(fn, init, tx, args))
    rows.append(row)
    print_row(row)
    if args.json:  # after every row: a long table's finished rows are never lost
      with open(args.json, 'w') as f:
        json.dump({'rows': rows, 'provenance': provenance(vars(args))}, f, indent=1)


def _run(fn, init, tx, args) -> dict:
  params = jax.jit(init)()
  opt_state = tx.init(params)
  key = jax.random.key(1)
  shape = (args.batch, args.latent, args.latent, 4)
  batch = (jax.random.normal(key, shape), jnp.arange(args.batch) % 1000,
           jnp.ones(args.batch))
  return time_steps(lambda p, s: fn(p, s, batch, batch, key), params, opt_state)


def compiled_memory(fn, abstract) -> dict:
  """What XLA's compiled memory analysis of ``fn`` on ``abstract`` arguments says: the
  arguments, the temporaries, the peak (``arguments + outputs - aliased + temporaries``),
  in GiB, and the compile time."""
  start = time.perf_counter()
  m = fn.lower(*abstract).compile().memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)
  return {'arguments_GiB': m.argument_size_in_bytes / GiB,
          'temporaries_GiB': m.temp_size_in_bytes / GiB, 'peak_GiB': peak / GiB,
          'compile_s': time.perf_counter() - start, 'backend': jax.default_backend()}


def print_row(row: dict) -> None:
  print(' '.join(f'{k}={v:.2f}' if isinstance(v, float) else f'{k}={v}'
                 for k, v in row.items()), flush=True)


def time_steps(step, params, opt_state, repeats: int = 6) -> dict:
  """``step(params, opt_state) -> (params, opt_state, loss)`` run ``repeats`` times (the
  first compiles): the median time of the others and the device's peak memory (NaN where
  the backend reports none)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  return {'step_ms': 1000 * sorted(times[1:])[len(times[1:]) // 2],
          'device_peak_GiB': stats.get('peak_bytes_in_use', float('nan')) / GiB}


if __name__ == '__main__':
  main()
