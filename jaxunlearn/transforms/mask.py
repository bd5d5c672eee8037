"""``mask_by_saliency``: update only salient weights, with the mask held in state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.transforms.masking import install_like, is_traced, unwrap_variables


class MaskBySaliencyState(NamedTuple):
  """State of :func:`mask_by_saliency`.

  Attributes:
    mask: tree like params, 1 where a weight may change, 0 where it is frozen (ones until
      :func:`set_saliency_mask` installs a mask). Kept in state, not baked into the program,
      so one compiled step serves every mask and the mask is checkpointed with the optimizer.
    inner_state: state of the wrapped optimizer (``optax.EmptyState()`` when none).
  """

  mask: Any
  inner_state: Any


def mask_by_saliency(freeze: bool = False,
                     inner: optax.GradientTransformation | None = None
                     ) -> optax.GradientTransformationExtraArgs:
  """Multiplies updates by a saliency mask held in state (SalUn, arXiv 2310.12508, eq. 6).

  .. math:: u \\leftarrow m \\odot u

  Where it stands decides what it guarantees:

  - ``mask_by_saliency(inner=opt, freeze=True)`` (recommended): masks the gradient going
    into ``opt`` (the SalUn reference's ``grad *= mask`` before ``optimizer.step()``) *and*
    zeroes ``opt``'s output on masked weights, so SGD momentum and weight decay inside ``opt``
    can never move them: masked weights stay bit-identical to their values at install time.
  - ``freeze=True`` without ``inner`` zeroes masked entries exactly (``where``, so a NaN
    there is dropped too); the guarantee holds only if it stands **last** in the chain, after
    every transform that adds to updates (momentum, ``add_decayed_weights``, learning rate).
  - ``freeze=False`` multiplies by the mask (soft masks allowed) wherever it stands. Put
    before the optimizer, or as ``inner=opt`` (the mask multiplies ``opt``'s input once),
    this is the SalUn reference code, whose weight decay and momentum still move masked
    weights (fixed there in 2026).

  Apply it *after* anything that mixes coordinates (a Hessian solve), or masked weights move.

  Args:
    freeze: zero masked entries exactly, as described above.
    inner: optional optimizer to wrap (its extras are passed through).

  Returns:
    A transformation with :class:`MaskBySaliencyState`; install a mask with
    :func:`set_saliency_mask`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import mask_by_saliency, set_saliency_mask
    >>> params = {'w': jnp.ones(3)}
    >>> tx = mask_by_saliency(freeze=True, inner=optax.sgd(0.1, momentum=0.9))
    >>> state = set_saliency_mask(tx.init(params), {'w': jnp.array([1.0, 0.0, 1.0])})
    >>> u, state = tx.update({'w': jnp.ones(3)}, state, params)
    >>> u['w']  # the unselected weight gets an update of exactly -0.0
    Array([-0.1, -0. , -0.1], dtype=float32)
  """
  inner = None if inner is None else optax.with_extra_args_support(inner)

  def init_fn(params):
    mask = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), jnp.asarray(p).dtype), params)
    inner_state = optax.EmptyState() if inner is None else inner.init(params)
    return MaskBySaliencyState(mask=mask, inner_state=inner_state)

  def apply(updates, mask):
    if freeze:  # -0.0, not 0.0: p + (-0.0) is p for every p, a -0.0 weight included
      return jax.tree.map(lambda u, m: jnp.where(m > 0, u, jnp.full_like(u, -0.0)), updates,
                          mask)
    return jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, mask)

  def update_fn(updates, state, params=None, **extra_args):
    if inner is None:
      return apply(updates, state.mask), state
    # The mask multiplies the gradient going in once; with freeze, the output is zeroed
    # where the mask is 0 (not multiplied again: a soft mask is never applied squared).
    updates = jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, state.mask)
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    if freeze:
      updates = apply(updates, state.mask)
    return updates, MaskBySaliencyState(state.mask, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_state(x):
  return isinstance(x, MaskBySaliencyState)


def set_saliency_mask(opt_state, mask):
  """Returns ``opt_state`` with ``mask`` installed in every :func:`mask_by_saliency` state.

  Works on a bare state and on one nested in ``optax.chain``, ``named_chain`` or
  ``inject_hyperparams``. The mask is cast to each leaf's dtype.

  Raises:
    ValueError: no ``mask_by_saliency`` in ``opt_state``, a mask whose structure or shapes
      differ from the parameters (exactly: a transposed mask is refused), or a mask that
      selects nothing (checked when the mask is concrete: inside ``jit``/``vmap`` only the
      structure and shapes are).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxunlearn.transforms import mask_by_saliency, set_saliency_mask
    >>> params = {'w': jnp.ones((2, 3))}
    >>> state = optax.chain(mask_by_saliency(), optax.sgd(0.1)).init(params)
    >>> set_saliency_mask(state, {'w': jnp.ones((3, 2))})
    Traceback (most recent call last):
    ValueError: saliency mask leaf of shape (3, 2) does not match parameter shape (2, 3)
  """
  found = []

  def install(state):
    if not _is_state(state):
      return state
    found.append(True)
    return state._replace(mask=install_like(mask, state.mask, 'saliency mask'))

  # Values are checked where they are concrete; inside jit or vmap (traced masks) the
  # structure and shapes still are, at trace time.
  mask = unwrap_variables(mask)  # a tree of nnx.Param (e.g. mapped over nnx.state(model))
  if not is_traced(mask):
    selected = sum(float(np.sum(np.asarray(m) != 0)) for m in jax.tree.leaves(mask))
    if selected == 0:
      raise ValueError('saliency mask selects no weight (all zeros): nothing could be '
                       'unlearned; raise the kept fraction')
  out = jax.tree.map(install, opt_state, is_leaf=_is_state)
  if not found:
    raise ValueError('set_saliency_mask: this optimizer state has no mask_by_saliency; add '
                     'jaxunlearn.transforms.mask_by_saliency(...) to the chain')
  return out
