"""Influence unlearning (IU) with the WoodFisher inverse-Fisher approximation.

IU (Koh & Liang 2017; Izzo et al. 2021) removes D_f with one Newton step. With the damped
empirical Fisher of M retain examples as the Hessian,

.. math:: F = \\lambda I + \\frac{1}{M} \\sum_{i=1}^{M} g_i g_i^\\top, \\qquad
          F^{-1} v = \\frac{1}{\\lambda}\\Big(v - G\\,(M \\lambda I_M + G^\\top G)^{-1} G^\\top v\\Big)

(the Woodbury identity, G = [g_1 ... g_M]). WoodFisher (Singh & Alistarh, arXiv 2004.14340)
builds exactly this inverse by M rank-one Sherman-Morrison updates from F_0 = lambda I; the
closed form gives the same result in one solve. The SalUn reference code
(``unlearn/Wfisher.py``) runs a recursion that keeps only the first sample's direction
(``o_vec`` is rescaled but never receives later gradients), so its "inverse" is a rank-one
correction of the identity; ours is the inverse the method describes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxunlearn import losses


@functools.lru_cache(maxsize=16)
def _per_example_grads(model):
  def one(variables, x, y):
    def loss(params):
      logits = model.apply({**variables, 'params': params}, x[None], train=False)
      return losses.cross_entropy(logits, y[None])[0]
    return ravel_pytree(jax.grad(loss)(variables['params']))[0]
  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def per_example_gradients(model, variables, x, y, batch_size: int = 64):
  """``[N, P]`` matrix of flat per-example CE gradients (eval mode)."""
  fn = _per_example_grads(model)
  return jnp.concatenate([fn(variables, x[s:s + batch_size], y[s:s + batch_size])
                          for s in range(0, len(y), batch_size)])


def fisher_diagonal_per_example(model, variables, x, y, batch_size: int = 32,
                                eps: float = 1e-8):
  """``mean_i (grad log p(y_i | x_i) + eps)^2`` as a tree like the params, eval mode, one
  gradient per example (the SalUn code's ``fisher_information_martix``, ``eps`` inside the
  square as there; ``grad log p_y = -grad CE``). One device: per-example gradients are
  vmapped."""
  fn = _per_example_grads(model)
  total = sum(jnp.sum(jnp.square(eps - fn(variables, x[s:s + batch_size],
                                           y[s:s + batch_size])), axis=0)
              for s in range(0, len(y), batch_size))
  return ravel_pytree(variables['params'])[1](total / len(y))


def gradient_sum(model, variables, x, y, batch_size: int = 64):
  """Flat sum over examples of their CE gradients (eval mode), one batch at a time."""
  fn = _per_example_grads(model)
  return sum(fn(variables, x[s:s + batch_size], y[s:s + batch_size]).sum(0)
             for s in range(0, len(y), batch_size))


def inverse_fisher_product(grads_mp, v, damping: float = 1.0):
  """``(damping I + G G^T / M)^{-1} v`` for ``G = grads_mp.T`` (rows are g_i)."""
  m = grads_mp.shape[0]
  gram = grads_mp @ grads_mp.T + m * damping * jnp.eye(m, dtype=grads_mp.dtype)
  coef = jnp.linalg.solve(gram, grads_mp @ v)
  return (v - grads_mp.T @ coef) / damping


def influence_direction(model, variables, forget_x, forget_y, retain_x, retain_y, *,
                        num_samples: int = 256, damping: float = 1.0):
  """The IU step ``F^{-1} (g_f - g_r)`` as a params tree, with the reference's scaling.

  ``g_f = sum_{D_f} grad CE / (n_f + n_r)`` and ``g_r = sum_{D_r} grad CE * n_f /
  ((n_f + n_r) n_r)``, as SalUn's ``Wfisher.py``; F from the first ``num_samples`` retain
  examples (index order, as its unshuffled batch-1 loader).
  """
  params = variables['params']
  _, unravel = ravel_pytree(params)
  n_f, n_r = len(forget_y), len(retain_y)
  g_f = gradient_sum(model, variables, forget_x, forget_y) / (n_f + n_r)
  g_r = gradient_sum(model, variables, retain_x, retain_y) * n_f / ((n_f + n_r) * n_r)
  m = min(num_samples, n_r)
  fisher_rows = per_example_gradients(model, variables, retain_x[:m], retain_y[:m])
  return unravel(inverse_fisher_product(fisher_rows, g_f - g_r, damping))
