"""``add_elastic_penalty``: EWC's quadratic pull toward the original weights."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.transforms.masking import install_like, is_traced, unwrap_variables


class ElasticPenaltyState(NamedTuple):
  """State of :func:`add_elastic_penalty`.

  Attributes:
    anchor: the parameters at ``init`` (the original model theta0), a copy.
    fisher: per-weight importance ``F`` (zeros until :func:`set_elastic_fisher` installs
      one: no penalty). Held in state, like the saliency mask, so one compiled step serves
      every Fisher and a checkpoint carries it.
  """

  anchor: Any
  fisher: Any


def add_elastic_penalty(strength: float) -> optax.GradientTransformationExtraArgs:
  """Adds the gradient of ``strength * sum F (theta - theta0)^2`` to the updates.

  .. math:: u \\leftarrow u + 2 \\lambda \\, F \\odot (\\theta - \\theta_0)

  Elastic weight consolidation (Kirkpatrick et al. 2017) as Selective Amnesia
  (Heng & Soh, NeurIPS 2023, arXiv 2305.10120) uses it to forget a concept while holding
  the weights that matter for the rest near the original: ``theta0`` is the params at
  ``init`` and ``F`` the original model's diagonal Fisher (installed afterwards with
  :func:`set_elastic_fisher`). Put it before clipping and the optimizer, as the reference
  adds the penalty to the loss.

  Args:
    strength: lambda.

  Returns:
    A transformation that requires ``params``.
  """

  def init_fn(params):
    copy = lambda p: jnp.array(p, copy=True)
    return ElasticPenaltyState(anchor=jax.tree.map(copy, params),
                               fisher=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('add_elastic_penalty needs params: call tx.update(updates, state, '
                       'params)')
    updates = jax.tree.map(
        lambda u, p, a, f: (u + 2 * strength * f * (p - a)).astype(u.dtype),
        updates, params, state.anchor, state.fisher)
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_state(x):
  return isinstance(x, ElasticPenaltyState)


def set_elastic_fisher(opt_state, fisher):
  """Returns ``opt_state`` with ``fisher`` installed in every :func:`add_elastic_penalty`
  state (bare or nested in a chain).

  Raises:
    ValueError: no ``add_elastic_penalty`` in the state, a tree or shapes unlike the
      params, or a Fisher with negative or non-finite entries.
  """
  fisher = unwrap_variables(fisher)  # a tree of nnx.Param (e.g. over nnx.state(model))
  leaves = [] if is_traced(fisher) else [np.asarray(f) for f in jax.tree.leaves(fisher)]
  if any(not np.all(np.isfinite(f)) or np.any(f < 0) for f in leaves):  # when concrete
    raise ValueError('the elastic penalty\'s Fisher must be finite and non-negative (a '
                     'diagonal Fisher is a mean of squared gradients)')
  found = []

  def install(state):
    if not _is_state(state):
      return state
    found.append(True)
    return state._replace(fisher=install_like(fisher, state.fisher, 'Fisher'))

  out = jax.tree.map(install, opt_state, is_leaf=_is_state)
  if not found:
    raise ValueError('set_elastic_fisher: this optimizer state has no add_elastic_penalty; '
                     'add jaxunlearn.transforms.add_elastic_penalty(...) to the chain')
  return out
