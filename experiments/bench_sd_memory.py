"""Peak memory of one Stable Diffusion unlearning step (SalUn, masked), so a user knows
which accelerator fits.

    python experiments/bench_sd_memory.py                       # SD v1.x, 512 px, batch 1 and 4
    python experiments/bench_sd_memory.py --remat 1 --batch 4   # one setting
    python experiments/bench_sd_memory.py --run                 # also run and time it (GPU/TPU)
    python experiments/bench_sd_memory.py --tiny                # a quick check of the script

The step is SalUn's on Stable Diffusion (SalUn's ``SD/train-scripts/random_label.py``): the
forget batch's latents under the concept's prompt regressed onto the (gradient-stopped)
prediction under the pseudo prompt, plus ``alpha`` times the denoising loss of the retain
batch under its prompts, the gradient masked to the salient half of the UNet's weights,
Adam: the UNet of :func:`jaxunlearn.models.unet_condition.sd_v1_unet` (859.5M
parameters) as a prompt-conditioned model over frozen CLIP states (``'prompts'``
collection, :mod:`jaxunlearn.diffusion.text`), on 512x512 images' 64x64x4 latents (the VAE
encodes once, beforehand, and the text encoder is frozen: neither is in the step). The
forget and retain batches are ``--batch`` examples each.

Without running anything, two measures:

- ``residuals_GiB``: what reverse-mode autodiff keeps from the forward pass for the
  backward one (JAX's saved residuals of the loss, as ``jax.ad_checkpoint.
  print_saved_residuals`` lists them). It is a property of the program, the same on every
  backend, and it is what remat shrinks; ``estimate_GiB`` adds the step's arguments
  (params, Adam's two moments, the mask, the batches) and one gradient: the memory an
  accelerator needs at least.
- XLA's compiled memory analysis on the backend the script runs on: arguments, outputs
  and temporaries, and the peak ``arguments + outputs - aliased + temporaries``. On a CPU
  this is the CPU program's buffer assignment, which does not realise remat's savings (a
  chain of 16 checkpointed tanh layers: 264 MiB of temporaries without remat, 384 MiB
  with it), so there it is an upper bound, not a GPU's figure.

``--run`` executes and times the step on the default device and adds the device's own peak
(``memory_stats``) where the backend reports one: the measured number on a GPU or TPU.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json

import jax
import jax.numpy as jnp
import optax

from bench_dit_memory import GiB, compiled_memory, print_row, time_steps
from jaxunlearn.diffusion.objectives import Denoiser, Denoising, RemappedClass
from jaxunlearn.diffusion.text import PromptConditioned
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.losses import reduce_loss
from jaxunlearn.models.unet_condition import UNet2DCondition, sd_v1_unet
from jaxunlearn.provenance import provenance
from jaxunlearn.transforms import mask_by_saliency

PROMPTS = 4   # e.g. two concept prompts, one pseudo prompt, the empty prompt
TINY = dict(block_out_channels=(32, 64), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
            up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1,
            attention_head_dim=4, cross_attention_dim=32, norm_num_groups=8)


def objective(model, loss, batch, key):
  """``params ->`` the batch's loss as the shared steps reduce it."""
  x, y, w = batch
  denoiser = Denoiser(model, DiffusionConfig(), loss)   # the memory is the schedule's

  def fn(params, states):
    per_example, _, _ = denoiser(params, {'prompts': {'states': states}}, x, y, key)
    return reduce_loss(loss, per_example, w)
  return fn


def total_loss(model, states, forget, retain, key, alpha):
  """``params ->`` SalUn's loss on Stable Diffusion: forget remapped + alpha * retain."""
  forget_loss = objective(model, RemappedClass(PROMPTS - 1), forget, key)
  retain_loss = objective(model, Denoising(reduction='mean'), retain, jax.random.fold_in(key, 1))
  return lambda p: forget_loss(p, states) + alpha * retain_loss(p, states)


def step(params, opt_state, states, forget, retain, key, *, model, tx, alpha):
  """One SalUn step; params and optimizer state are donated."""
  loss, grads = jax.value_and_grad(total_loss(model, states, forget, retain, key, alpha))(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def setting(args, batch: int, remat: bool):
  unet = (UNet2DCondition(**TINY, remat=remat) if args.tiny else sd_v1_unet(remat=remat))
  latent = 8 if args.tiny else args.latent
  model = PromptConditioned(unet, PROMPTS, context_length=77)
  shape = (batch, latent, latent, 4)
  states = jax.ShapeDtypeStruct((PROMPTS, 77, unet.cross_attention_dim), jnp.float32)
  init = lambda: model.init(jax.random.key(0), jnp.zeros(shape), jnp.zeros(batch),
                            jnp.zeros(batch, jnp.int32))['params']
  params = jax.eval_shape(init)
  tx = mask_by_saliency(freeze=True, inner=optax.adam(1e-5))
  opt_state = jax.eval_shape(tx.init, params)
  data = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32),
          jax.ShapeDtypeStruct((batch,), jnp.float32))
  fn = jax.jit(functools.partial(step, model=model, tx=tx, alpha=args.alpha),
               donate_argnums=(0, 1))
  residuals = functools.partial(residual_bytes, model, args.alpha)
  return (init, tx, fn, (params, opt_state, states, data, data, jax.random.key(0)), shape,
          residuals)


def residual_bytes(model, alpha, params, states, forget, retain, key) -> int:
  """Bytes of what reverse-mode autodiff keeps from the forward pass for the backward one
  (``jax``'s saved residuals, arguments excluded): a property of the program, not of a
  backend's buffer assignment, so it shows what remat saves on any device."""
  from jax._src.ad_checkpoint import saved_residuals   # what print_saved_residuals lists
  loss = lambda p, st, f, r, k: total_loss(model, st, f, r, k, alpha)(p)
  return sum(a.size * a.dtype.itemsize
             for a, where in saved_residuals(loss, params, states, forget, retain, key)
             if 'from the argument' not in where)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--latent', type=int, default=64, help='latent side (512 px / 8)')
  parser.add_argument('--batch', default='1,4', help='forget (and retain) batch sizes')
  parser.add_argument('--remat', default='0,1', help='0 and/or 1, comma-separated')
  parser.add_argument('--alpha', type=float, default=0.5, help="the retain loss's weight")
  parser.add_argument('--tiny', action='store_true', help='a tiny UNet: checks the script')
  parser.add_argument('--run', action='store_true', help='execute and time the step too')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  rows = []
  for batch, remat in itertools.product([int(b) for b in args.batch.split(',')],
                                        [bool(int(r)) for r in args.remat.split(',')]):
    init, tx, fn, abstract, shape, residuals = setting(args, batch, remat)
    params_m = sum(x.size for x in jax.tree.leaves(abstract[0])) / 1e6
    kept = residuals(abstract[0], *abstract[2:])
    row = {'model': 'tiny' if args.tiny else 'SD v1.x UNet', 'batch': batch,
           'latent': shape[1], 'remat': remat, 'params_M': params_m,
           'residuals_GiB': kept / GiB, **compiled_memory(fn, abstract)}
    # the estimate: the step's arguments (params, Adam's moments, the mask, the batches),
    # one gradient the size of the params, the residuals kept for the backward pass
    row['estimate_GiB'] = row['arguments_GiB'] + 4 * params_m * 1e6 / GiB + row['residuals_GiB']
    if args.run:
      row.update(_run(fn, init, tx, abstract, shape))
    rows.append(row)
    print_row(row)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'provenance': provenance(vars(args))}, f, indent=1)


def _run(fn, init, tx, abstract, shape) -> dict:
  params = jax.jit(init)()
  opt_state = tx.init(params)
  key = jax.random.key(1)
  states = jax.random.normal(key, abstract[2].shape)
  batch = (jax.random.normal(key, shape), jnp.arange(shape[0]) % (PROMPTS - 1),
           jnp.ones(shape[0]))
  return time_steps(lambda p, s: fn(p, s, states, batch, batch, key), params, opt_state)


if __name__ == '__main__':
  main()
