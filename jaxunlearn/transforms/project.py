"""``project_onto_forget_memory``: ScissorHands' gradient projection (GEM with one memory)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


class ProjectOntoForgetMemoryState(NamedTuple):
  """State of :func:`project_onto_forget_memory`.

  Attributes:
    count: int32 number of updates so far; the memory is refreshed when ``count % every``
      is 0.
    memory: the forget gradient stored at the last refresh (a tree like the params; zero on
      the leaves the projection leaves alone).
  """

  count: jax.Array
  memory: optax.Updates


def _selected(prefixes):
  """``path -> bool``: the leaf's top-level module starts with one of ``prefixes`` (all
  leaves when None)."""
  def select(path) -> bool:
    if prefixes is None:
      return True
    first = getattr(path[0], 'key', getattr(path[0], 'name', str(path[0]))) if path else ''
    return any(str(first).startswith(p) for p in prefixes)
  return select


def project_onto_forget_memory(every: int, prefixes: Sequence[str] | None = None,
                               margin: float = 0.5, eps: float = 1e-3
                               ) -> optax.GradientTransformationExtraArgs:
  """Keeps each update from undoing the forgetting (ScissorHands, Wu & Harandi,
  arXiv 2401.06187; GEM's projection, Lopez-Paz & Ranzato 2017, with one memory).

  Every ``every`` updates (once per epoch in the reference) the current forget gradient
  ``g_o`` (extra argument ``forget_grads``: the gradient of the forget objective signed so
  that minimising it forgets, ``-CE``) is stored. An update ``g`` (the gradient of the joint
  loss) with ``<g, g_o> < 0`` would raise the forget objective; it is replaced by the
  solution of GEM's dual problem with one constraint:

  .. math:: g \\leftarrow g + v\\, g_o, \\qquad
     v = \\max\\Big(\\frac{-\\langle g, g_o\\rangle}{\\lVert g_o\\rVert^2 + \\epsilon},
     \\ \\text{margin}\\Big)

  which is what the reference's ``quadprog`` solve returns for one memory (its dual variable
  is bounded below by ``margin`` = 0.5, its Gram matrix regularised by ``eps`` = 1e-3).
  Only the leaves whose top-level module name starts with one of ``prefixes`` take part (the
  reference projects the last two ResNet stages and the head: ``('stage3', 'stage4',
  'head')``); None: all.

  Args:
    every: updates between refreshes of the memory (> 0).
    prefixes: names of the top-level modules projected, or None for all.
    margin: lower bound of the dual variable.
    eps: added to ``||g_o||^2``.

  Returns:
    A transformation whose ``update(updates, state, params=None, *, forget_grads, **extra)``
    requires ``forget_grads``. Place it after :func:`combine_forget_retain` (which makes
    ``updates`` the joint gradient) and before weight decay, as the reference projects the
    raw gradient before ``SGD.step``.
  """
  if every < 1:
    raise ValueError(f'project_onto_forget_memory needs every >= 1, got {every}')
  select = _selected(None if prefixes is None else tuple(prefixes))

  def init_fn(params):
    return ProjectOntoForgetMemoryState(count=jnp.zeros([], jnp.int32),
                                        memory=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, forget_grads, **extra_args):
    del params, extra_args
    refresh = state.count % every == 0
    memory = jax.tree_util.tree_map_with_path(
        lambda path, g, m: jnp.where(refresh, g, m).astype(m.dtype) if select(path)
        else m, forget_grads, state.memory)
    dot = sum(jnp.vdot(u.astype(jnp.float32), m.astype(jnp.float32))
              for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(memory)))
    norm2 = sum(jnp.sum(jnp.square(m.astype(jnp.float32))) for m in jax.tree.leaves(memory))
    v = jnp.where(dot < 0, jnp.maximum(-dot / (norm2 + eps), margin), 0.0)
    updates = jax.tree.map(lambda u, m: (u + v * m).astype(u.dtype), updates, memory)
    return updates, ProjectOntoForgetMemoryState(count=optax.safe_increment(state.count),
                                                 memory=memory)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
