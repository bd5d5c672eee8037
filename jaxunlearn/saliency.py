"""Saliency masks: which weights unlearning may change.

SalUn (arXiv 2310.12508, section 4): the gradient of the forget loss at the original model,
accumulated over the forget set with the model in eval mode, ranked by magnitude over *all*
parameters at once (BatchNorm and head included); the top ``keep`` fraction is salient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import losses as losses_lib
from jaxunlearn.losses import weighted_mean
from jaxunlearn.train import epoch_batches


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
def _batch_grad(model, loss_fn):
  def grad(variables, x, y, w):
    def objective(params):
      logits = model.apply({**variables, 'params': params}, x, train=False)
      return weighted_mean(loss_fn(logits, y, None), w)
    return jax.grad(objective)(variables['params'])
  return jax.jit(grad)


def accumulate_gradients(model, variables, x, y, loss_fn=losses_lib.gradient_ascent,
                         batch_size: int = 128):
  """Sum over batches of the gradient of the batch-mean ``loss_fn`` (model in eval mode).

  This is SalUn's mask statistic (its ``generate_mask.py`` sums ``loss.backward()`` of
  ``-CE`` over the forget loader). Batches are in index order; the last is padded with
  weight-0 repeats.
  """
  if len(y) == 0:
    raise ValueError('cannot accumulate gradients over an empty set')
  fn = _batch_grad(model, loss_fn)
  total = None
  for idx, w in epoch_batches(len(y), batch_size, seed=0, epoch=0, shuffle=False):
    g = fn(variables, x[idx], y[idx], w)
    total = g if total is None else jax.tree.map(jnp.add, total, g)
  return total


def salun_mask(model, variables, forget_x, forget_y, keep: float = 0.5,
               batch_size: int = 128):
  """SalUn's weight saliency mask: top ``keep`` of ``|sum_batches grad(-CE(D_f))|``."""
  return topk_gradient_mask(accumulate_gradients(model, variables, forget_x, forget_y,
                                                 batch_size=batch_size), keep)


def mask_fraction(mask) -> float:
  """Fraction of entries selected by a 0/1 mask tree."""
  leaves = jax.tree.leaves(mask)
  return float(sum(np.sum(np.asarray(m) != 0) for m in leaves) / sum(np.size(m) for m in leaves))
