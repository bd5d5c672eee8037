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


def _tree_vdot(x, y):
  return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def _loop(n, body, init, unroll):
  """``n`` applications of ``body``: a Python loop (one straight-line program) or
  ``lax.fori_loop``. XLA:CPU runs convolutions inside a loop body roughly 9x slower than
  unrolled (measured on ResNet-18), so small fixed iteration counts are unrolled."""
  if unroll:
    carry = init
    for i in range(n):
      carry = body(i, carry)
    return carry
  return jax.lax.fori_loop(0, n, body, init)


def _cg(matvec, b, iters, unroll):
  """``iters`` conjugate-gradient iterations for ``A d = b`` from ``d = 0``. Truncated: an
  iteration that meets non-positive curvature ``p'Ap <= 0`` (an indefinite Hessian) or a
  zero residual changes nothing, so ``d`` stays the last descent-safe iterate."""
  zeros = jax.tree.map(jnp.zeros_like, b)
  rs = _tree_vdot(b, b)

  def body(_, carry):
    d, r, p, rs, done = carry
    ap = matvec(p)
    curvature = _tree_vdot(p, ap)
    ok = jnp.logical_and(jnp.logical_not(done), jnp.logical_and(curvature > 0, rs > 0))
    alpha = jnp.where(ok, rs / jnp.where(ok, curvature, 1.0), 0.0)
    d = _tree_axpy(alpha, p, d)
    r = _tree_axpy(-alpha, ap, r)
    rs_new = _tree_vdot(r, r)
    beta = jnp.where(ok, rs_new / jnp.where(ok, rs, 1.0), 0.0)
    p = jax.tree.map(lambda ri, pi: jnp.where(ok, ri + beta * pi, pi), r, p)
    return d, r, p, jnp.where(ok, rs_new, rs), jnp.logical_not(ok)

  d, *_ = _loop(iters, body, (zeros, b, b, rs, jnp.asarray(False)), unroll)
  return d


def precondition_by_remain_hessian(damping: float = 1e-3, iters: int = 10, method: str = 'cg',
                                   neumann_scale: float = 1.0, axis_name: str | None = None,
                                   unroll: bool | None = None, recompute: bool = False
                                   ) -> optax.GradientTransformationExtraArgs:
  """Replaces ``updates`` by an approximate solution of ``(H_r + damping I) d = updates``.

  ``H_r`` is the Hessian of the remain loss at the current params, used only through
  Hessian-vector products. This is the second-order remain geometry of SFR-on (Huang et
  al., NeurIPS 2024, arXiv 2409.19732, eq. 8), which its fast-slow schedule approximates
  implicitly. Put it before any ``mask_by_saliency``: the solve mixes coordinates.

  The products are forward-over-reverse, ``jax.linearize(jax.grad(retain_loss_fn), params)``
  once per update: the remain gradient's forward and backward pass is computed once and
  every product of the solve reuses it (as optax's sophia does, without the reuse). The
  reuse stores the linearisation, every residual of the forward *and* backward pass, which
  for a large model is the memory bottleneck (DiT-XL/2 at batch 32: about 150 GiB).
  ``recompute=True`` instead computes each product afresh as
  ``jax.jvp(jax.grad(retain_loss_fn), (params,), (v,))``: one forward-over-reverse pass
  per product (the primal forward and backward pass again each time, where the reused
  linearisation runs only its tangent half), whose memory is that of one
  gradient with tangents, and which rematerialised blocks (``nn.remat``) shrink further.

  Methods (a fixed number of products, so the compiled program is static):

  - ``'cg'``: ``iters`` conjugate-gradient iterations from 0, truncated at the first
    direction of non-positive curvature (a non-convex remain loss), so the result is always
    a descent-safe combination of ``updates`` and its Krylov vectors.
  - ``'neumann'``: ``d = s sum_{k<=iters} (I - s A)^k b`` with ``s = neumann_scale``; converges
    when ``s * lambda_max(A) < 2`` and ``A`` is positive definite.

  Args:
    damping: Tikhonov damping added to ``H_r``.
    iters: CG iterations or Neumann terms.
    method: 'cg' or 'neumann'.
    neumann_scale: step ``s`` of the Neumann series.
    axis_name: under ``pmap``, the mapped axis: each device's HVP of its local loss is
      averaged with ``lax.pmean``, giving the HVP of the global-batch mean loss.
    unroll: run the iterations as straight-line code (fast on every backend, but the
      program grows with ``iters``) or in a ``lax.fori_loop``; None (default) unrolls up to
      16 iterations, but never with ``recompute``: unrolled, the scheduler keeps every
      iteration's vectors alive (DiT-XL/2 step, 10 CG iterations: XLA estimates 64 GiB
      unrolled, 26 GiB in the loop, as for 3).
    recompute: recompute the remain forward and backward pass in every product instead of
      storing its linearisation once (memory for compute; see above).

  Returns:
    A transformation whose ``update(updates, state, params, *, retain_loss_fn, **extra)``
    requires ``params`` and ``retain_loss_fn(params) -> scalar``, the device-local mean remain
    loss. Computations run in float32; updates keep their dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxunlearn.transforms import precondition_by_remain_hessian
    >>> loss = lambda p: jnp.sum(jnp.array([1.0, 4.0]) * p['w'] ** 2)  # H = diag(2, 8)
    >>> tx = precondition_by_remain_hessian(damping=0.0, iters=2)
    >>> params = {'w': jnp.ones(2)}
    >>> d, _ = tx.update({'w': jnp.array([2.0, 8.0])}, tx.init(params), params,
    ...                  retain_loss_fn=loss)
    >>> d['w'].round(4)  # H^-1 g: two CG iterations solve a 2x2 system
    Array([1., 1.], dtype=float32)
  """
  if method not in ('cg', 'neumann'):
    raise ValueError(f"method must be 'cg' or 'neumann', got {method!r}")
  if iters < 1:
    raise ValueError(f'iters must be >= 1, got {iters}')
  # Checked where concrete: under optax.inject_hyperparams in a jitted step the factory gets
  # a traced damping (changed between steps without recompiling); it was checked when given.
  if not isinstance(damping, jax.core.Tracer) and not damping >= 0:
    raise ValueError(f'damping must be >= 0, got {damping}')
  if unroll is None:
    unroll = iters <= 16 and not recompute

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
    if recompute:
      def hvp(v):
        # The barrier ties the primal pass to this product's vector, so XLA can neither
        # merge the identical primal passes of the products (CSE) nor hoist them out of
        # the loop: either would keep one pass's residuals alive across all of them.
        p, v = jax.lax.optimization_barrier((p32, v))
        return jax.jvp(grad_fn, (p,), (v,))[1]
    else:
      _, hvp = jax.linearize(grad_fn, p32)

    def matvec(v):
      hv = hvp(v)
      if axis_name is not None:
        hv = jax.lax.pmean(hv, axis_name)
      return _tree_axpy(damping, v, hv)

    if method == 'cg':
      d = _cg(matvec, b, iters, unroll)
    else:
      def term(_, carry):  # r_k = (I - s A)^k s b;  d = sum of r_0 .. r_k
        d, r = carry
        r = _tree_axpy(-neumann_scale, matvec(r), r)
        return jax.tree.map(jnp.add, d, r), r
      r0 = jax.tree.map(lambda x: neumann_scale * x, b)
      d, _ = _loop(iters, term, (r0, r0), unroll)
    d = jax.tree.map(lambda di, u: di.astype(u.dtype), d, updates)
    return d, PreconditionByRemainHessianState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
