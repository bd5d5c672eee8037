"""``multi_steps``: gradient accumulation that accumulates the forget gradient too.

``optax.MultiSteps(tx, k)`` averages ``updates`` (the retain gradient) over ``k``
mini-steps but hands ``tx`` only the last mini-step's extras, so a ``forget_grads`` extra
comes from one mini-batch of the ``k``. :func:`multi_steps` averages the named array
extras alongside (each shaped like the params) and calls the inner transformation once
every ``k`` calls with both means; other extras (closures such as ``retain_loss_fn``)
are passed as the ``k``-th call gives them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class MultiStepsState(NamedTuple):
  """State of :func:`multi_steps`: the mini-step in the current window, the number of
  inner steps taken, the running means of ``updates`` and of each accumulated extra, and
  the inner state."""

  mini_step: jax.Array
  gradient_step: jax.Array
  acc_updates: Any
  acc_extras: dict
  inner_state: Any


def multi_steps(inner: optax.GradientTransformation, every_k: int,
                accumulate: tuple[str, ...] = ('forget_grads',)
                ) -> optax.GradientTransformationExtraArgs:
  """Accumulates ``every_k`` calls into one ``inner`` step, averaging ``updates`` and the
  extras named in ``accumulate`` (trees like the params); returns zeros in between, as
  ``optax.MultiSteps`` does.

  Args:
    inner: the transformation to step every ``every_k`` calls.
    every_k: mini-steps per step (>= 1).
    accumulate: names of array extras to average (each call must pass them).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import combine_forget_retain, multi_steps
    >>> tx = multi_steps(optax.chain(combine_forget_retain(1.0), optax.sgd(1.0)), 2)
    >>> params = {'w': jnp.zeros(1)}
    >>> state = tx.init(params)
    >>> for g_r, g_f in [(1.0, 4.0), (3.0, 0.0)]:
    ...   u, state = tx.update({'w': jnp.array([g_r])}, state, params,
    ...                        forget_grads={'w': jnp.array([g_f])})
    >>> u['w']  # -(mean g_R + mean g_F) = -(2 + 2)
    Array([-4.], dtype=float32)
  """
  if every_k < 1:
    raise ValueError(f'every_k must be >= 1, got {every_k}')
  inner = optax.with_extra_args_support(inner)
  f32 = lambda t: jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), t)

  def init_fn(params):
    return MultiStepsState(
        mini_step=jnp.zeros([], jnp.int32), gradient_step=jnp.zeros([], jnp.int32),
        acc_updates=f32(params), acc_extras={name: f32(params) for name in accumulate},
        inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    missing = [name for name in accumulate if name not in extra_args]
    if missing:
      raise ValueError(f'multi_steps accumulates {missing} but the call did not pass '
                       f'{"it" if len(missing) == 1 else "them"}')
    n = state.mini_step.astype(jnp.float32)
    mean = lambda acc, new: jax.tree.map(
        lambda a, x: a + (x.astype(jnp.float32) - a) / (n + 1), acc, new)
    acc_updates = mean(state.acc_updates, updates)
    acc_extras = {name: mean(state.acc_extras[name], extra_args[name]) for name in accumulate}
    emit = state.mini_step == every_k - 1
    cast = lambda t, like: jax.tree.map(lambda a, x: a.astype(jnp.result_type(x)), t, like)

    def step(_):
      extras = {**extra_args, **{k: cast(v, extra_args[k]) for k, v in acc_extras.items()}}
      return inner.update(cast(acc_updates, updates), state.inner_state, params, **extras)

    def wait(_):
      return jax.tree.map(jnp.zeros_like, updates), state.inner_state

    out, inner_state = jax.lax.cond(emit, step, wait, None)
    keep = lambda new: jax.tree.map(lambda x: jnp.where(emit, jnp.zeros_like(x), x), new)
    return out, MultiStepsState(
        mini_step=jnp.where(emit, 0, state.mini_step + 1),
        gradient_step=jnp.where(emit, optax.safe_increment(state.gradient_step),
                                state.gradient_step),
        acc_updates=keep(acc_updates), acc_extras={k: keep(v) for k, v in acc_extras.items()},
        inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
