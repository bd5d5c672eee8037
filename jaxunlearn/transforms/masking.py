"""Our transforms under ``optax.masked`` and ``optax.partition``.

``optax.masked(tx, mask)`` hands ``tx`` the masked part of ``updates`` and ``params``
(``optax.MaskedNode`` where the mask is False), and by default the extras unmasked. Two
consequences for unlearning transforms:

- an array extra like ``forget_grads`` no longer lines up with ``updates``:
  :func:`restrict_like` (used inside every transform of ours) drops it where ``updates``
  is masked, so ``optax.masked`` works with its default settings;
- a closure (``forget_grad_fn``, ``retain_loss_fn``) is called with the masked params,
  which a model cannot run on. :func:`masked` and :func:`partition` (drop-in for optax's)
  call each closure on the *full* params (the masked part being the ones the inner
  transform sees) and mask what it returns like the params.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _is_masked(x) -> bool:
  return isinstance(x, optax.MaskedNode)


def is_traced(tree) -> bool:
  """Whether any leaf of ``tree`` is a tracer (inside ``jit``, ``vmap``, ``grad``): value
  checks of the installers run only on concrete trees."""
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _is_variable(x) -> bool:
  try:
    from flax import nnx
  except ImportError:  # flax is a dependency; this keeps the transforms importable alone
    return False
  return isinstance(x, nnx.Variable)


def unwrap_variables(tree):
  """``tree`` with each flax ``nnx.Variable`` (the ``OptVariable``/``OptArray`` of an
  ``nnx.Optimizer``'s ``opt_state``, the ``Param`` of ``nnx.state(model)``) replaced by its
  value: the installers compare and fill such trees like plain ones."""
  return jax.tree.map(lambda v: v.get_value() if _is_variable(v) else v, tree,
                      is_leaf=_is_variable)


def rewrap_like(values, like):
  """``values`` (a tree like ``unwrap_variables(like)``) put back into ``like``'s
  structure, ``nnx.Variable`` wrappers (and their metadata) included."""
  return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(values))


def _expand_masked(tree, like):
  """``tree`` with a subtree-level ``optax.MaskedNode`` expanded to one per leaf of
  ``like`` (a mask written ``{'head': MaskedNode()}`` for a whole module)."""
  try:
    return jax.tree.map(lambda t, l: jax.tree.map(lambda _: optax.MaskedNode(), l)
                        if _is_masked(t) else t, tree, like, is_leaf=_is_masked)
  except ValueError:  # other structures: install_like says what differs
    return tree


def install_like(tree, field, what: str):
  """``tree`` (a mask or Fisher shaped like the params) as the new value of the state field
  ``field``, the one installer of :func:`set_saliency_mask` and :func:`set_elastic_fisher`:
  ``nnx.Variable`` wrappers taken off and put back, cut to ``optax.masked``'s part, the
  structure and exact shapes checked (at trace time too), each leaf cast to the field's
  dtype in a fresh buffer.

  Raises:
    ValueError: a tree or a leaf shape unlike the params (``what`` names the tree).
  """
  current = unwrap_variables(field)  # an nnx.Optimizer's state holds Variables
  tree = restrict_like(_expand_masked(unwrap_variables(tree), current), current)
  if jax.tree.structure(current) != jax.tree.structure(tree):
    raise ValueError(f'{what} does not match the parameters: expected a tree like '
                     f'{jax.tree.structure(current)}, got {jax.tree.structure(tree)}')
  for old, new in zip(jax.tree.leaves(current), jax.tree.leaves(tree)):
    if np.shape(new) != old.shape:
      raise ValueError(f'{what} leaf of shape {np.shape(new)} does not match parameter '
                       f'shape {old.shape}')
  return rewrap_like(jax.tree.map(lambda old, x: jnp.array(x, old.dtype, copy=True),
                                  current, tree), field)


def restrict_like(tree, updates):
  """``tree`` with ``optax.MaskedNode`` wherever ``updates`` has one (``tree`` unchanged
  when ``updates`` has none)."""
  if not any(_is_masked(x) for x in jax.tree.leaves(updates, is_leaf=_is_masked)):
    return tree
  return jax.tree.map(lambda u, t: u if _is_masked(u) else t, updates, tree,
                      is_leaf=_is_masked)


def _merge(masked_params, full_params):
  """The full params, with the inner transform's (masked) values where it has them."""
  return jax.tree.map(lambda m, f: f if _is_masked(m) else m, masked_params, full_params,
                      is_leaf=_is_masked)


def _lift(fn: Callable, full_params, like):
  """``fn`` (a closure over full params) as a closure over the masked params: called on
  the merged full params, its output masked like the params when it is a tree of them."""
  structure = jax.tree.structure(full_params)

  def lifted(masked_params, *args, **kwargs):
    out = fn(_merge(masked_params, full_params), *args, **kwargs)
    return restrict_like(out, like) if jax.tree.structure(out) == structure else out
  return lifted


def masked(inner: optax.GradientTransformation, mask) -> optax.GradientTransformationExtraArgs:
  """``optax.masked(inner, mask)`` whose closures (callable extras) run on the full params
  and whose array extras shaped like the params are masked with them.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxunlearn.transforms import align_forget_retain, masked
    >>> params = {'body': jnp.ones(2), 'head': jnp.ones(1)}
    >>> loss = lambda p: jnp.sum(p['body']) * p['head'][0]  # needs both parts
    >>> tx = masked(align_forget_retain(0.1), {'body': True, 'head': False})
    >>> u, _ = tx.update(jax.grad(loss)(params), tx.init(params), params,
    ...                  forget_grad_fn=jax.grad(lambda p: -loss(p)))
    >>> u['body'], u['head']  # body: g_R + grad L_U(look-ahead); head passed through
    (Array([0., 0.], dtype=float32), Array([2.], dtype=float32))
  """
  base = optax.masked(inner, mask, mask_compatible_extra_args=True)

  def update_fn(updates, state, params=None, **extra_args):
    if params is not None:
      mask_tree = mask(updates) if callable(mask) else mask
      like = jax.tree.map(lambda m, u: u if m else optax.MaskedNode(), mask_tree, updates)
      extra_args = {k: _lift(v, params, like) if callable(v) else v
                    for k, v in extra_args.items()}
    return base.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(base.init, update_fn)


def partition(transforms: Mapping[Hashable, optax.GradientTransformation],
              param_labels: Any | Callable[[Any], Any]) -> optax.GradientTransformationExtraArgs:
  """``optax.partition``, each part by :func:`masked`: ``transforms[label]`` updates the
  params labelled ``label``; closures given as extras run on the full params."""
  labels = param_labels

  def mask_for(label):
    return lambda tree: jax.tree.map(lambda lab: lab == label,
                                     labels(tree) if callable(labels) else labels)

  parts = {label: masked(tx, mask_for(label)) for label, tx in transforms.items()}

  def init_fn(params):
    return {label: tx.init(params) for label, tx in parts.items()}

  def update_fn(updates, state, params=None, **extra_args):
    new_state = {}
    for label, tx in parts.items():
      updates, new_state[label] = tx.update(updates, state[label], params, **extra_args)
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
