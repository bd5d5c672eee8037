"""``combine_forget_retain``: one update from a retain-descent and a forget gradient."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.transforms.masking import restrict_like


class CombineForgetRetainState(NamedTuple):
  """State of :func:`combine_forget_retain`.

  Attributes:
    count: int32 number of updates so far; the step at which schedules are evaluated.
  """

  count: jax.Array


def _value(weight, count):
  return weight(count) if callable(weight) else weight


def combine_forget_retain(forget_weight: optax.ScalarOrSchedule,
                          retain_weight: optax.ScalarOrSchedule = 1.0
                          ) -> optax.GradientTransformationExtraArgs:
  """Mixes the retain gradient (``updates``) with a forget gradient.

  .. math:: u_t = w^r_t \\, g_R + w^f_t \\, g_F

  where ``g_F`` is the gradient of a forget objective signed so that *minimising* it forgets
  (``-CE`` for gradient ascent, random-label CE for RL/SalUn). SFR-on (arXiv 2409.19732) uses
  a cosine-decayed ``w^f_t = a_0 (1 + cos(pi t / T)) / 2``:
  ``optax.cosine_decay_schedule(a_0, T)``.

  Args:
    forget_weight: float or optax schedule ``w^f_t``.
    retain_weight: float or optax schedule ``w^r_t``.

  Returns:
    A transformation whose ``update(updates, state, params=None, *, forget_grads, **extra)``
    requires ``forget_grads`` (a tree like ``updates``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import combine_forget_retain
    >>> tx = optax.chain(combine_forget_retain(forget_weight=0.5), optax.sgd(1.0))
    >>> params = {'w': jnp.zeros(2)}
    >>> u, state = tx.update({'w': jnp.array([1.0, 2.0])}, tx.init(params), params,
    ...                      forget_grads={'w': jnp.array([4.0, -2.0])})
    >>> u['w']  # -(g_R + 0.5 g_F)
    Array([-3., -1.], dtype=float32)
  """

  def init_fn(params):
    del params
    return CombineForgetRetainState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, forget_grads, **extra_args):
    del params, extra_args
    wf, wr = _value(forget_weight, state.count), _value(retain_weight, state.count)
    forget_grads = restrict_like(forget_grads, updates)  # under optax.masked
    updates = jax.tree.map(
        lambda u, g: (wr * u + wf * g).astype(u.dtype) if u is not None else None,
        updates, forget_grads)
    return updates, CombineForgetRetainState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class AddL1PenaltyState(NamedTuple):
  """State of :func:`add_l1_penalty`.

  Attributes:
    count: int32 number of updates so far; the step at which ``strength`` is evaluated.
  """

  count: jax.Array


def add_l1_penalty(strength: optax.ScalarOrSchedule) -> optax.GradientTransformationExtraArgs:
  """Adds the subgradient of ``strength_t * ||params||_1`` to the updates.

  .. math:: u \\leftarrow u + \\alpha_t \\, \\mathrm{sign}(\\theta)

  The l1-sparse unlearning baseline (Jia et al., "Model Sparsity Can Simplify Machine
  Unlearning", arXiv 2304.04934) fine-tunes on D_r with this penalty, ``alpha_t`` decaying
  linearly to 0 (``optax.linear_schedule(alpha, 0, T)``). Like ``optax.add_decayed_weights``
  it stands before the optimizer, so momentum sees the penalty as part of the gradient, as
  in the reference code where the penalty is part of the loss.

  Args:
    strength: float or optax schedule ``alpha_t``.

  Returns:
    A transformation that requires ``params``.
  """

  def init_fn(params):
    del params
    return AddL1PenaltyState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('add_l1_penalty needs params: call tx.update(updates, state, params)')
    alpha = _value(strength, state.count)
    updates = jax.tree.map(lambda u, p: (u + alpha * jnp.sign(p)).astype(u.dtype), updates, params)
    return updates, AddL1PenaltyState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
