"""Saliency masks: which weights unlearning may change.

SalUn (arXiv 2310.12508, section 4): the gradient of the forget loss at the original model,
accumulated over the forget set with the model in eval mode, ranked by magnitude over *all*
parameters at once (BatchNorm and head included); the top ``keep`` fraction is salient.

SFR-on (arXiv 2409.19732, section 4.3): a weight is salient when the forget set's diagonal
Fisher exceeds ``gamma`` times the remain set's, i.e. forgetting through it costs the remain
set little.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.step import batch_objective
from jaxunlearn.train import epoch_batches, num_batches


def topk_gradient_mask(grads, keep: float):
  """0/1 mask (float32, tree like ``grads``) of the top ``keep`` fraction of ``|grads|``.

  Exactly ``round(keep * N)`` of the N entries are 1 (at least one). Ties in ``|g|`` are
  broken deterministically: the entry that comes first in the flattened tree wins.

  Raises:
    ValueError: ``keep`` outside (0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxunlearn.saliency import topk_gradient_mask
    >>> topk_gradient_mask({'a': jnp.array([0.1, -3.0]), 'b': jnp.array([2.0, 0.5])}, 0.5)
    {'a': Array([0., 1.], dtype=float32), 'b': Array([1., 0.], dtype=float32)}
  """
  if not 0 < keep <= 1:
    raise ValueError(f'saliency keep fraction must lie in (0, 1], got {keep}')
  leaves, treedef = jax.tree.flatten(grads)
  flat = jnp.concatenate([jnp.abs(jnp.ravel(x)).astype(jnp.float32) for x in leaves])
  k = max(1, int(round(keep * flat.size)))
  order = jnp.argsort(-flat, stable=True)  # stable: equal magnitudes keep index order
  selected = jnp.zeros(flat.size, jnp.float32).at[order[:k]].set(1.0)
  out, start = [], 0
  for x in leaves:
    out.append(selected[start:start + x.size].reshape(jnp.shape(x)))
    start += x.size
  return jax.tree.unflatten(treedef, out)


@functools.lru_cache(maxsize=32)
def _batch_grad(objective, clip_norm: float, parallel: Parallel = SINGLE):
  axis_name = parallel.axis_name
  objective = parallel.objective(objective)

  def grad(args, batch):
    variables, key = args
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    fn = batch_objective(objective, model_state, batch, key, axis_name)
    g = jax.grad(lambda p: fn(p)[0])(variables['params'])
    g = g if axis_name is None else jax.lax.pmean(g, axis_name)
    return _clipped(g, clip_norm)
  return parallel.batched(grad)


def _clipped(g, clip_norm: float):
  """``g`` clipped to global norm ``clip_norm`` (0: unchanged), as ``clip_grad_norm_``."""
  if clip_norm > 0:
    g = optax.clip_by_global_norm(clip_norm).update(g, optax.EmptyState())[0]
  return g


def accumulate_gradients(objective, variables, x, y, batch_size: int = 128,
                         square: bool = False, clip_norm: float = 0.0, seed: int = 0,
                         parallel: Parallel = SINGLE):
  """Sum over batches of the gradient of ``objective``'s batch loss at ``variables``.

  This is SalUn's mask statistic (its ``generate_mask.py`` sums ``loss.backward()`` of
  ``-CE`` over the forget loader, model in eval mode:
  ``Classifier(model, gradient_ascent, train=False)``). Batches are in index order; the last
  is padded with weight-0 repeats. With ``square``, sums the elementwise squares of the
  batch gradients instead (the Fisher statistic of :func:`fisher_diagonal`). Each batch
  gradient is first clipped to global norm ``clip_norm`` (0: not clipped; both DDPM
  references call ``clip_grad_norm_`` before reading it). Batch ``i``'s key (timesteps and
  noise of a denoising objective) is ``fold_in(key(seed), i)``. With ``parallel``, each
  batch is split over its devices (the same batch gradients).
  """
  if len(y) == 0:
    raise ValueError('cannot accumulate gradients over an empty set')
  fn = _batch_grad(objective, clip_norm, parallel)
  total, key = None, jax.random.key(seed)
  for i, (idx, w) in enumerate(epoch_batches(len(y), batch_size, seed=0, epoch=0,
                                             shuffle=False, multiple_of=parallel.size)):
    g = fn((variables, jax.random.fold_in(key, i)), (x[idx], y[idx], w))
    if square:
      g = jax.tree.map(jnp.square, g)
    total = g if total is None else jax.tree.map(jnp.add, total, g)
  return total


def salun_mask(objective, variables, forget_x, forget_y, keep: float = 0.5,
               batch_size: int = 128, clip_norm: float = 0.0, parallel: Parallel = SINGLE):
  """SalUn's weight saliency mask: top ``keep`` of ``|sum_batches grad L(D_f)|``, ``L`` the
  forget statistic's objective (classification: ``-CE`` in eval mode; diffusion: the
  conditional denoising loss, each batch gradient clipped to 1)."""
  g = accumulate_gradients(objective, variables, forget_x, forget_y, batch_size,
                           clip_norm=clip_norm, parallel=parallel)
  return topk_gradient_mask(g, keep)


def mask_fraction(mask) -> float:
  """Fraction of entries selected by a 0/1 mask tree."""
  leaves = jax.tree.leaves(mask)
  return float(sum(np.sum(np.asarray(m) != 0) for m in leaves) / sum(np.size(m) for m in leaves))


@functools.lru_cache(maxsize=16)
def _example_squares(objective, clip_norm: float, parallel: Parallel = SINGLE):
  axis_name = parallel.axis_name
  objective = parallel.objective(objective)

  def squares(args, batch):
    variables, key = args
    params = variables['params']
    model_state = {k: v for k, v in variables.items() if k != 'params'}

    # One image at a time (lax.scan), its key folded with its index: each device squares
    # the gradients of its own images, so the sum is the same on any number of devices.
    def add(total, example):
      x, y, w, i = example
      loss = lambda p: jnp.sum(objective(p, model_state, x[None], y[None],
                                         jax.random.fold_in(key, i))[0])
      g = _clipped(jax.grad(loss)(params), clip_norm)
      return jax.tree.map(lambda t, gi: t + w * jnp.square(gi), total, g), None
    total, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, params), batch)
    return total if axis_name is None else jax.lax.psum(total, axis_name)
  return parallel.batched(squares)


def _per_example_fisher(objective, variables, x, y, clip_norm, parallel, chunk: int = 16):
  fn = _example_squares(objective, clip_norm, parallel)
  total, key = None, jax.random.key(0)
  size = -(-chunk // parallel.size) * parallel.size
  for idx, w in epoch_batches(len(y), size, seed=0, epoch=0, shuffle=False,
                              multiple_of=parallel.size):
    f = fn((variables, key), (x[idx], y[idx], w, idx.astype(np.int32)))
    total = f if total is None else jax.tree.map(jnp.add, total, f)
  return jax.tree.map(lambda f: f / len(y), total)


def fisher_diagonal(objective, variables, x, y, batch_size: int = 128,
                    clip_norm: float = 0.0, parallel: Parallel = SINGLE):
  """Diagonal empirical Fisher as SFR-on's references compute it: the mean over batches of
  the squared (clipped, with ``clip_norm``) gradient of the batch loss (classification:
  ``Classifier(model, cross_entropy, train=False)``; DDPM: the denoising loss, clipped to 1,
  as its ``generate_fisher``; its DiT code: batches of one image, unclipped).

  ``batch_size=1`` squares each image's own gradient, on every device count alike (one
  image per batch cannot be split over devices: the images are, and each device squares
  its own); image ``i``'s key is ``fold_in(key(0), i)``, as batch ``i``'s otherwise."""
  if len(y) == 0:
    raise ValueError('cannot compute a Fisher over an empty set')
  if batch_size == 1:
    return _per_example_fisher(objective, variables, x, y, clip_norm, parallel)
  total = accumulate_gradients(objective, variables, x, y, batch_size, square=True,
                               clip_norm=clip_norm, parallel=parallel)
  batches = num_batches(len(y), batch_size, parallel.size)
  return jax.tree.map(lambda f: f / batches, total)


def fisher_ratio(forget_fisher, remain_fisher, eps: float = 1e-15):
  """SFR-on's weight saliency ``(F_f + eps) / (F_r + eps)`` per weight (the references'
  ``eps``; a weight neither Fisher touches has ratio 1)."""
  return jax.tree.map(lambda f, r: (f + eps) / (r + eps), forget_fisher, remain_fisher)


def fisher_ratio_mask(forget_fisher, remain_fisher, gamma: float = 1.0, eps: float = 1e-15):
  """SFR-on's mask ``m = [fisher_ratio(F_f, F_r) >= gamma]`` as a float32 0/1 tree.

  Raises:
    ValueError: ``gamma`` not positive, or a mask that selects no weight (lower ``gamma``).
  """
  if not gamma > 0:
    raise ValueError(f'Fisher-ratio threshold gamma must be positive, got {gamma}')
  mask = jax.tree.map(lambda q: (q >= gamma).astype(jnp.float32),
                      fisher_ratio(forget_fisher, remain_fisher, eps))
  if mask_fraction(mask) == 0:
    raise ValueError(f'Fisher-ratio mask with gamma={gamma} selects no weight: the forget '
                     'set is nowhere more sensitive than the remain set; lower gamma')
  return mask


def sfron_mask(objective, variables, forget_x, forget_y, retain_x, retain_y,
               gamma: float = 1.0, batch_size: int = 128, clip_norm: float = 0.0,
               parallel: Parallel = SINGLE):
  """SFR-on's Fisher-ratio saliency mask from the forget and remain sets' Fishers of
  ``objective`` (:func:`fisher_diagonal`)."""
  fisher = lambda x, y: fisher_diagonal(objective, variables, x, y, batch_size, clip_norm,
                                        parallel)
  return fisher_ratio_mask(fisher(forget_x, forget_y), fisher(retain_x, retain_y), gamma)
