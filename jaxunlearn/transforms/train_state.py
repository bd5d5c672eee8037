"""A flax ``TrainState`` whose ``apply_gradients`` passes our transforms their extras.

``flax.training.train_state.TrainState.apply_gradients(grads=...)`` calls
``tx.update(grads, opt_state, params)`` with nothing else, so a transform that needs
``forget_grads`` or a ``retain_loss_fn`` closure cannot run behind it. This subclass takes
them as ``extra_args``; build closures inside the jitted step (a lambda passed as a
static argument of ``jit`` is a new object each call and retraces every batch).

    state = TrainState.create(apply_fn=model.apply, params=params,
                              tx=optax.chain(combine_forget_retain(1.0), optax.sgd(0.01)))

    @jax.jit
    def step(state, retain_batch, forget_batch):
      g_r = jax.grad(retain_loss)(state.params, retain_batch)
      g_f = jax.grad(forget_loss)(state.params, forget_batch)
      return state.apply_gradients(grads=g_r, extra_args={'forget_grads': g_f})
"""

from __future__ import annotations

import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax's ``TrainState`` with ``apply_gradients(grads=..., extra_args={...})``: the extras
  go to ``tx.update`` (our transforms' ``forget_grads``, ``forget_grad_fn``,
  ``retain_loss_fn``); without them it is flax's method.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import TrainState, combine_forget_retain
    >>> state = TrainState.create(apply_fn=None, params={'w': jnp.zeros(2)},
    ...                           tx=optax.chain(combine_forget_retain(1.0), optax.sgd(0.5)))
    >>> state = state.apply_gradients(grads={'w': jnp.ones(2)},
    ...                               extra_args={'forget_grads': {'w': jnp.array([1.0, -3.0])}})
    >>> state.params['w'], int(state.step)
    (Array([-1.,  1.], dtype=float32), 1)
  """

  def apply_gradients(self, *, grads, extra_args: dict | None = None, **kwargs):
    if extra_args is None:
      return super().apply_gradients(grads=grads, **kwargs)
    if train_state.OVERWRITE_WITH_GRADIENT in grads:
      raise ValueError('extra_args with an overwrite-with-gradient collection is not '
                       'supported: give the params collection alone')
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **extra_args)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, **kwargs)
