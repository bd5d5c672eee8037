"""``apply_if_finite``: optax's finiteness guard, extended to the step's array extras.

``optax.apply_if_finite`` looks only at ``updates``. Our transforms take a second gradient
as an extra (``combine_forget_retain``'s ``forget_grads``) or compute one from a closure
(``align_forget_retain``'s ``forget_grad_fn``), so a NaN there slips past it into the
params, uncounted. This guard rejects a step when the incoming updates, any array among
the extras, or the inner transformation's outgoing updates are not finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _all_finite(leaves) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(x)) for x in leaves
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def _arrays(tree) -> list:
  """The array leaves of ``tree`` (closures and other objects are skipped)."""
  return [x for x in jax.tree.leaves(tree) if isinstance(x, (jax.Array, np.ndarray))]


def apply_if_finite(inner: optax.GradientTransformation, max_consecutive_errors: int
                    ) -> optax.GradientTransformationExtraArgs:
  """Like ``optax.apply_if_finite`` (same state, :class:`optax.ApplyIfFiniteState`, same
  give-up rule after ``max_consecutive_errors`` rejected steps in a row), but a step is
  rejected — zero updates, the inner state kept, counted in ``total_notfinite`` — when
  ``updates``, any array in the extra arguments (e.g. ``forget_grads``) or the inner
  transformation's output (e.g. from a ``forget_grad_fn`` closure) holds a NaN or inf.

  Unlike optax's, the inner update is always computed (its output is checked too), so a
  rejected step costs as much as an accepted one.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import apply_if_finite, combine_forget_retain
    >>> tx = apply_if_finite(optax.chain(combine_forget_retain(1.0), optax.sgd(0.1)), 3)
    >>> params = {'w': jnp.ones(2)}
    >>> u, state = tx.update({'w': jnp.ones(2)}, tx.init(params), params,
    ...                      forget_grads={'w': jnp.array([jnp.nan, 1.0])})
    >>> u['w'], int(state.total_notfinite)  # rejected: nothing applied, counted
    (Array([0., 0.], dtype=float32), 1)
  """
  inner = optax.with_extra_args_support(inner)
  if max_consecutive_errors < 0:
    raise ValueError(f'max_consecutive_errors must be >= 0, got {max_consecutive_errors}')

  def init_fn(params):
    return optax.ApplyIfFiniteState(
        notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True),
        total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    finite = (_all_finite(jax.tree.leaves(updates)) & _all_finite(_arrays(extra_args))
              & _all_finite(jax.tree.leaves(new_updates)))
    notfinite_count = jnp.where(finite, 0, optax.safe_increment(state.notfinite_count))
    accept = finite | (notfinite_count > max_consecutive_errors)
    out = jax.tree.map(lambda u: jnp.where(accept, u, jnp.zeros_like(u)), new_updates)
    inner_state = jax.tree.map(lambda new, old: jnp.where(accept, new, old), new_inner,
                               state.inner_state)
    return out, optax.ApplyIfFiniteState(
        notfinite_count=notfinite_count, last_finite=finite,
        total_notfinite=jnp.where(finite, state.total_notfinite,
                                  optax.safe_increment(state.total_notfinite)),
        inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
