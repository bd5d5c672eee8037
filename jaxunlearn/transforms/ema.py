"""``track_params_ema``: an exponential moving average of the parameters an optimizer makes.

Diffusion models are sampled from an EMA of their weights, not from the last step's: DDPM
(Ho et al. 2020) and the references' DDPM code keep one at decay 0.9999, DiT's ``train.py``
too. The average rides in the optimizer state, so it is jitted with the step, sharded and
replicated like the rest of the state, skipped with a skipped step and checkpointed and
resumed with it; :func:`ema_params` reads it out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.transforms.masking import is_traced


class TrackParamsEMAState(NamedTuple):
  """State of :func:`track_params_ema`.

  Attributes:
    inner_state: the wrapped optimizer's state.
    ema: ``sum_k decay^(t-k) (1 - decay) theta_k`` over the params ``theta_1..theta_t``
      after each update (float32 at least, whatever the params' dtype): the average from
      zeros, before its bias correction.
    weight: ``1 - decay^t`` accumulated the same way (a float32 scalar): ``ema / weight``
      is the bias-corrected average (Adam's correction), exact also when ``decay`` changes
      from step to step (``inject_hyperparams``).
  """

  inner_state: Any
  ema: Any
  weight: jax.Array


def _accumulator(dtype):
  return jnp.promote_types(dtype, jnp.float32)


def track_params_ema(inner: optax.GradientTransformation, decay: float
                     ) -> optax.GradientTransformationExtraArgs:
  """``inner``, unchanged, keeping an exponential moving average of the params it makes.

  After each update ``u`` of ``inner`` at params ``theta`` the average takes in the new
  params ``theta + u``:

  .. math:: e \\leftarrow d\\, e + (1 - d)(\\theta + u), \\quad w \\leftarrow d\\, w + (1 - d)

  from ``e = 0, w = 0``; :func:`ema_params` returns ``e / w``. It wraps the optimizer
  (rather than being a link of a chain) so that what it averages is the update actually
  applied: put it outermost, around every other transform (an outer ``optax.masked`` or
  ``multi_steps`` is fine: they hand it the params they update). The updates pass through
  bit for bit.

  Args:
    inner: the optimizer whose params to average.
    decay: ``d`` in [0, 1): 0.9999 in DDPM and DiT (runs of hundreds of thousands of
      steps); the window is about ``1 / (1 - d)`` updates.

  Returns:
    A transformation that requires ``params``.
  """
  if not is_traced(decay) and not 0 <= decay < 1:
    raise ValueError(f'track_params_ema: decay must lie in [0, 1), got {decay}')
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return TrackParamsEMAState(
        inner.init(params),
        jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _accumulator(p.dtype)), params),
        jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('track_params_ema needs params: call tx.update(updates, state, '
                       'params)')
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    new = optax.apply_updates(params, updates)
    d = jnp.asarray(decay, jnp.float32)
    ema = jax.tree.map(lambda e, p: (d * e + (1 - d) * p.astype(e.dtype)).astype(e.dtype),
                       state.ema, new)
    return updates, TrackParamsEMAState(inner_state, ema, d * state.weight + (1 - d))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_state(x):
  return isinstance(x, TrackParamsEMAState)


def ema_params(opt_state, like=None):
  """The bias-corrected average of the (outermost) :func:`track_params_ema` in
  ``opt_state``, in the dtypes of ``like`` (the params; None: the average's own).

  Raises:
    ValueError: the state holds no ``track_params_ema``, or it has averaged no update yet.
  """
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_state) if _is_state(s)]
  if not found:
    raise ValueError('ema_params: this optimizer state has no track_params_ema; wrap the '
                     'optimizer in jaxunlearn.transforms.track_params_ema(tx, decay)')
  state = found[0]
  weight = state.weight
  if not is_traced(weight) and not bool(jnp.all(weight > 0)):
    raise ValueError('ema_params: the average has taken in no update yet (decay 1 would '
                     'never take one): take a step first')
  # an ensemble's weight has a model axis: broadcast it over each leaf's trailing axes
  scale = lambda e: e / jnp.reshape(weight, jnp.shape(weight) + (1,) * (e.ndim - weight.ndim))  # noqa: E731
  out = jax.tree.map(scale, state.ema)
  if like is not None:
    out = jax.tree.map(lambda e, p: e.astype(p.dtype), out, like)
  return out
