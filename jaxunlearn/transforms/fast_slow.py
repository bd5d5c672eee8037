"""Pieces of SFR-on's fast-slow schedule: two steps sharing one optimizer state.

Every ``every``-th iteration SFR-on takes a forget (ascent) step, and every iteration a
retain (descent) step, both through the *same* optimizer, so momentum carries over from one
to the other (Huang et al., NeurIPS 2024, arXiv 2409.19732, Algorithm 1). With optax this
is two chains with one state::

    forget_tx = optax.chain(forget_preprocessing, optimizer)   # the forget step
    retain_tx = optax.chain(hold(forget_preprocessing), optimizer)   # the retain step

``hold`` keeps the state layout of the forget chain in the retain chain without touching
it, so either step can be applied to the state the other returned. The optimizer counts
both kinds of update; :func:`fast_slow_schedule` turns a schedule over iterations (the
reference steps its learning rate once per iteration) into one over that count.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import optax


def hold(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``tx``'s state, held: updates pass through unchanged and the state is not advanced.

  Use it to give a chain the state layout of another that shares its state (the retain
  step of a fast-slow pair). The state is the one ``tx.init`` builds, so masks installed
  with ``set_saliency_mask`` and schedules' counts survive the held steps unchanged.
  """
  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return updates, state

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def fast_slow_schedule(schedule: Callable, every: int) -> Callable:
  """``schedule(iteration)`` as a function of the update count of a fast-slow pair.

  Iteration ``t`` issues a forget update then a retain update when ``t % every == 0``, and
  a retain update alone otherwise, so blocks of ``every`` iterations hold ``every + 1``
  updates. Both updates of an iteration get ``schedule(t)``, as in the reference, where the
  scheduler steps once per iteration.
  """
  if every < 1:
    raise ValueError(f'the forget step period must be >= 1, got {every}')
  if not callable(schedule):
    constant = schedule
    return lambda count: constant

  def fn(count):
    block, r = jnp.divmod(count, every + 1)
    return schedule(block * every + jnp.maximum(r - 1, 0))

  return fn
