"""``align_forget_retain``: LUR's look-ahead (meta) gradient."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.transforms.masking import restrict_like


class AlignForgetRetainState(NamedTuple):
  """State of :func:`align_forget_retain`.

  Attributes:
    count: int32 number of updates so far.
  """

  count: jax.Array


def align_forget_retain(inner_lr: float, order: str = 'first', virtual: str = 'retain',
                        forget_weight: float = 1.0, retain_weight: float = 1.0,
                        axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """The gradient of LUR's look-ahead objective (Patel & Qiu, ICCV 2025, arXiv 2503.06339).

  With ``virtual='retain'`` (default) the retain task takes a virtual step that stays in
  the graph, and the forget loss is evaluated after it:

  .. math::
      L(\\theta) = w_r L_R(\\theta) + w_u L_U(\\theta - \\eta \\nabla L_R(\\theta)),\\qquad
      \\nabla L = w_r g_R + w_u (I - \\eta H_R) \\nabla L_U(\\theta')

  To first order in ``eta``, ``L_U(theta') = L_U(theta) - eta <grad L_U, g_R>``: minimising
  it also raises the inner product of the forget and retain gradients, the alignment the
  method is after. ``order='first'`` drops the ``eta H_R`` term (no Hessian-vector
  product). ``virtual='forget'`` swaps the roles: ``w_u L_U(theta) + w_r L_R(theta - eta
  grad L_U(theta))``.

  Args:
    inner_lr: ``eta``, the virtual step's learning rate.
    order: 'first' or 'second' (one forward-over-reverse HVP of the virtual task's loss).
    virtual: which task takes the virtual step, 'retain' or 'forget'.
    forget_weight, retain_weight: ``w_u`` and ``w_r`` (floats or optax schedules).
    axis_name: under ``pmap``, the mapped axis: gradients and HVPs of the device-local
      closures are averaged with ``lax.pmean`` (``updates`` is expected averaged already).

  Returns:
    A transformation whose ``update(updates, state, params, *, forget_grad_fn, **extra)``
    takes ``updates`` = the retain gradient ``g_R`` at ``params``, and
    ``forget_grad_fn(params) -> grads`` of the forget objective (signed so that minimising it
    forgets). Also needed: ``retain_loss_fn(params) -> scalar`` for ``order='second'`` or
    ``virtual='forget'``, and ``forget_loss_fn(params) -> scalar`` for ``virtual='forget'``
    with ``order='second'``. With ``virtual='forget'``, ``forget_grads`` (the forget gradient
    at ``params``, if the step has it) saves recomputing it. Computations run in float32;
    updates keep their dtype.
  """
  if order not in ('first', 'second'):
    raise ValueError(f"order must be 'first' or 'second', got {order!r}")
  if virtual not in ('retain', 'forget'):
    raise ValueError(f"virtual must be 'retain' or 'forget', got {virtual!r}")
  w_u = forget_weight if callable(forget_weight) else (lambda _: forget_weight)
  w_r = retain_weight if callable(retain_weight) else (lambda _: retain_weight)

  def mean(tree):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

  def init_fn(params):
    del params
    return AlignForgetRetainState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, forget_grad_fn=None, retain_loss_fn=None,
                forget_loss_fn=None, forget_grads=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('align_forget_retain needs params: call tx.update(updates, state, '
                       'params, forget_grad_fn=...)')
    if forget_grad_fn is None and (virtual == 'retain' or forget_grads is None):
      raise ValueError('align_forget_retain needs forget_grad_fn(params) -> grads (with '
                       "virtual='forget', forget_grads at params will do instead)")
    f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
    p = f32(params)
    if virtual == 'retain':
      inner, inner_loss, inner_w, outer_w = f32(updates), retain_loss_fn, w_r, w_u
      outer_grad = lambda q: f32(forget_grad_fn(q))
    else:
      if retain_loss_fn is None:
        raise ValueError("virtual='forget' needs retain_loss_fn (the outer task's loss)")
      g_u = forget_grad_fn(p) if forget_grads is None else restrict_like(forget_grads, p)
      inner, inner_loss, inner_w, outer_w = mean(f32(g_u)), forget_loss_fn, w_u, w_r
      outer_grad = jax.grad(lambda q: jnp.asarray(retain_loss_fn(q), jnp.float32))
    shifted = jax.tree.map(lambda a, g: a - inner_lr * g, p, inner)
    outer = mean(outer_grad(shifted))
    if order == 'second':
      if inner_loss is None:
        raise ValueError(f"order='second' with virtual={virtual!r} needs "
                         f"{virtual}_loss_fn for the Hessian-vector product")
      inner_grad = jax.grad(lambda q: jnp.asarray(inner_loss(q), jnp.float32))
      hvp = mean(jax.jvp(inner_grad, (p,), (outer,))[1])
      outer = jax.tree.map(lambda o, h: o - inner_lr * h, outer, hvp)
    a, b = inner_w(state.count), outer_w(state.count)
    out = jax.tree.map(lambda i, o, u: (a * i + b * o).astype(u.dtype), inner, outer, updates)
    return out, AlignForgetRetainState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
