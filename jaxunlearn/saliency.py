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

from jaxunlearn import losses as losses_lib
from jaxunlearn.losses import weighted_mean
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.train import epoch_batches, num_batches


def topk_gradient_mask(grads, keep: float):
  """0/1 mask (float32, tree like ``grads``) of the top ``keep`` fraction of ``|grads|``.

  Exactly ``round(keep * N)`` of the N entries are 1 (at least one). Ties in ``|g|`` are
  broken deterministically: the entry that comes first in the flattened tree wins.

  Raises:
    ValueError: ``keep`` outside (0, 1].
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
def _batch_grad(model, loss_fn, parallel: Parallel = SINGLE):
  axis_name = parallel.axis_name

  def grad(variables, batch):
    x, y, w = batch

    def objective(params):
      logits = model.apply({**variables, 'params': params}, x, train=False)
      return weighted_mean(loss_fn(logits, y, None), w, axis_name)

    g = jax.grad(objective)(variables['params'])
    return g if axis_name is None else jax.lax.pmean(g, axis_name)
  return parallel.batched(grad)


def accumulate_gradients(model, variables, x, y, loss_fn=losses_lib.gradient_ascent,
                         batch_size: int = 128, square: bool = False,
                         parallel: Parallel = SINGLE):
  """Sum over batches of the gradient of the batch-mean ``loss_fn`` (model in eval mode).

  This is SalUn's mask statistic (its ``generate_mask.py`` sums ``loss.backward()`` of
  ``-CE`` over the forget loader). Batches are in index order; the last is padded with
  weight-0 repeats. With ``square``, sums the elementwise squares of the batch gradients
  instead (the Fisher statistic of :func:`fisher_diagonal`). With ``parallel``, each batch
  is split over its devices (eval mode: the same batch gradients).
  """
  if len(y) == 0:
    raise ValueError('cannot accumulate gradients over an empty set')
  fn = _batch_grad(model, loss_fn, parallel)
  total = None
  for idx, w in epoch_batches(len(y), batch_size, seed=0, epoch=0, shuffle=False,
                              multiple_of=parallel.size):
    g = fn(variables, (x[idx], y[idx], w))
    if square:
      g = jax.tree.map(jnp.square, g)
    total = g if total is None else jax.tree.map(jnp.add, total, g)
  return total


def salun_mask(model, variables, forget_x, forget_y, keep: float = 0.5,
               batch_size: int = 128, parallel: Parallel = SINGLE):
  """SalUn's weight saliency mask: top ``keep`` of ``|sum_batches grad(-CE(D_f))|``."""
  return topk_gradient_mask(accumulate_gradients(model, variables, forget_x, forget_y,
                                                 batch_size=batch_size, parallel=parallel),
                            keep)


def mask_fraction(mask) -> float:
  """Fraction of entries selected by a 0/1 mask tree."""
  leaves = jax.tree.leaves(mask)
  return float(sum(np.sum(np.asarray(m) != 0) for m in leaves) / sum(np.size(m) for m in leaves))


def fisher_diagonal(model, variables, x, y, batch_size: int = 128,
                    parallel: Parallel = SINGLE):
  """Diagonal empirical Fisher as SFR-on's reference computes it: the mean over batches of
  the squared gradient of the batch-mean cross-entropy (model in eval mode)."""
  total = accumulate_gradients(model, variables, x, y, losses_lib.cross_entropy, batch_size,
                               square=True, parallel=parallel)
  batches = num_batches(len(y), batch_size, parallel.size)
  return jax.tree.map(lambda f: f / batches, total)


def fisher_ratio_mask(forget_fisher, remain_fisher, gamma: float = 1.0, eps: float = 1e-15):
  """SFR-on's mask ``m = [(F_f + eps) / (F_r + eps) >= gamma]`` as a float32 0/1 tree.

  Raises:
    ValueError: ``gamma`` not positive, or a mask that selects no weight (lower ``gamma``).
  """
  if not gamma > 0:
    raise ValueError(f'Fisher-ratio threshold gamma must be positive, got {gamma}')
  mask = jax.tree.map(lambda f, r: ((f + eps) / (r + eps) >= gamma).astype(jnp.float32),
                      forget_fisher, remain_fisher)
  if mask_fraction(mask) == 0:
    raise ValueError(f'Fisher-ratio mask with gamma={gamma} selects no weight: the forget '
                     'set is nowhere more sensitive than the remain set; lower gamma')
  return mask


def sfron_mask(model, variables, forget_x, forget_y, retain_x, retain_y, gamma: float = 1.0,
               batch_size: int = 128, parallel: Parallel = SINGLE):
  """SFR-on's Fisher-ratio saliency mask from the forget and remain sets (eval mode)."""
  fisher = lambda x, y: fisher_diagonal(model, variables, x, y, batch_size, parallel)
  return fisher_ratio_mask(fisher(forget_x, forget_y), fisher(retain_x, retain_y), gamma)
