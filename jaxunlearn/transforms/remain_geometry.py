"""``precondition_by_remain_hessian``: the explicit remain geometry of SFR-on."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class PreconditionByRemainHessianState(NamedTuple):
  """State of :func:`precondition_by_remain_hessian`.

  Attributes:
    count: int32 number of updates so far.
  """

  count: jax.Array


def _tree_axpy(a, x, y):
  return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def precondition_by_remain_hessian(damping: float = 1e-3, iters: int = 10, method: str = 'cg',
                                   neumann_scale: float = 1.0, axis_name: str | None = None
                                   ) -> optax.GradientTransformationExtraArgs:
  """Replaces ``updates`` by an approximate solution of ``(H_r + damping I) d = updates``.

  ``H_r`` is the Hessian of the remain loss at the current params, used only through
  Hessian-vector products ``jax.jvp(jax.grad(retain_loss_fn), (params,), (v,))[1]`` (as
  optax's sophia). This is the second-order remain geometry of SFR-on (Huang et al.,
  NeurIPS 2024, arXiv 2409.19732, eq. 8), which its fast-slow schedule approximates
  implicitly. Put it before any ``mask_by_saliency``: the solve mixes coordinates.

  Methods (a fixed number of HVPs, so the compiled program is static):

  - ``'cg'``: ``iters`` conjugate-gradient iterations from 0
    (``jax.scipy.sparse.linalg.cg``); needs ``H_r + damping I`` positive definite, so choose
    ``damping`` above the most negative curvature of a non-convex loss.
  - ``'neumann'``: ``d = s sum_{k<=iters} (I - s A)^k b`` with ``s = neumann_scale``; converges
    when ``s * lambda_max(A) < 2`` and ``A`` is positive definite.

  Args:
    damping: Tikhonov damping added to ``H_r``.
    iters: CG iterations or Neumann terms.
    method: 'cg' or 'neumann'.
    neumann_scale: step ``s`` of the Neumann series.
    axis_name: under ``pmap``, the mapped axis: each device's HVP of its local loss is
      averaged with ``lax.pmean``, giving the HVP of the global-batch mean loss.

  Returns:
    A transformation whose ``update(updates, state, params, *, retain_loss_fn, **extra)``
    requires ``params`` and ``retain_loss_fn(params) -> scalar``, the device-local mean remain
    loss. Computations run in float32; updates keep their dtype.
  """
  if method not in ('cg', 'neumann'):
    raise ValueError(f"method must be 'cg' or 'neumann', got {method!r}")
  if iters < 1:
    raise ValueError(f'iters must be >= 1, got {iters}')

  def init_fn(params):
    del params
    return PreconditionByRemainHessianState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, retain_loss_fn, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('precondition_by_remain_hessian needs params: call '
                       'tx.update(updates, state, params, retain_loss_fn=...)')
    f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
    p32, b = f32(params), f32(updates)
    grad_fn = jax.grad(lambda p: jnp.asarray(retain_loss_fn(p), jnp.float32))

    def matvec(v):
      hvp = jax.jvp(grad_fn, (p32,), (v,))[1]
      if axis_name is not None:
        hvp = jax.lax.pmean(hvp, axis_name)
      return _tree_axpy(damping, v, hvp)

    if method == 'cg':
      d, _ = jax.scipy.sparse.linalg.cg(matvec, b, maxiter=iters, tol=0.0)
    else:
      def term(_, carry):  # r_k = (I - s A)^k s b;  d = sum of r_0 .. r_k
        d, r = carry
        r = _tree_axpy(-neumann_scale, matvec(r), r)
        return jax.tree.map(jnp.add, d, r), r
      r0 = jax.tree.map(lambda x: neumann_scale * x, b)
      d, _ = jax.lax.fori_loop(0, iters, term, (r0, r0))
    d = jax.tree.map(lambda di, u: di.astype(u.dtype), d, updates)
    return d, PreconditionByRemainHessianState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
