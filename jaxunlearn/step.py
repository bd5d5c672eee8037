"""Pure, jit-compiled step functions.

A step is ``(state, batch, key) -> (state, metrics)`` with static configuration (model,
loss, optimizer) bound by :func:`compiled_train_step`, which caches the compiled program so
that every seed and every method with the same configuration reuses it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxunlearn.losses import weighted_mean

LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class TrainState(NamedTuple):
  """Everything a training or unlearning loop carries from step to step.

  Attributes:
    params: the model's trainable parameters.
    model_state: the model's other variable collections (BatchNorm ``batch_stats``).
    opt_state: the optax state of the transformation chain.
    step: int32 scalar, number of steps taken; per-step keys fold it into the base key.
  """

  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array

  @property
  def variables(self):
    return {'params': self.params, **self.model_state}


def init_state(variables, tx: optax.GradientTransformation) -> TrainState:
  """A fresh :class:`TrainState` for ``variables`` (a flax variables dict)."""
  params = variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  return TrainState(params, model_state, tx.init(params), jnp.zeros([], jnp.int32))


def train_step(state: TrainState, x, y, w, base_key, *, model: nn.Module, loss_fn: LossFn,
               tx: optax.GradientTransformation):
  """One optimizer step on the weighted mean of ``loss_fn`` over a batch.

  Args:
    state: the current :class:`TrainState`.
    x, y: a batch of inputs ``[B, H, W, C]`` and int labels ``[B]``.
    w: per-example weights ``[B]`` (0 for padding in the last, wrapped-around batch).
    base_key: PRNG key; the step's key is ``fold_in(base_key, state.step)``.
    model, loss_fn, tx: static configuration.

  Returns:
    ``(new_state, {'loss': scalar, 'accuracy': scalar})``.
  """
  key = jax.random.fold_in(base_key, state.step)

  def objective(params):
    logits, new_model_state = model.apply({'params': params, **state.model_state}, x,
                                          train=True, mutable=list(state.model_state))
    return weighted_mean(loss_fn(logits, y, key), w), (new_model_state, logits)

  (loss, (model_state, logits)), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  accuracy = weighted_mean((jnp.argmax(logits, -1) == y).astype(jnp.float32), w)
  new_state = TrainState(params, dict(model_state), opt_state, optax.safe_increment(state.step))
  return new_state, {'loss': loss, 'accuracy': accuracy}


@functools.lru_cache(maxsize=128)
def compiled_train_step(model: nn.Module, loss_fn: LossFn, tx_factory: Callable[[], Any]):
  """``jax.jit`` of :func:`train_step`, cached per (model, loss, optimizer factory).

  All three must be hashable by value: flax modules are, module-level loss functions are,
  and ``tx_factory`` is a frozen dataclass whose call builds the optax transformation (e.g.
  :class:`jaxunlearn.train.OptimConfig`).
  """
  return jax.jit(functools.partial(train_step, model=model, loss_fn=loss_fn, tx=tx_factory()),
                 donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _compiled_apply(model: nn.Module):
  return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def predict(model: nn.Module, variables, x, batch_size: int = 512):
  """Eval-mode logits for all of ``x`` as a float32 numpy array ``[N, num_classes]``.

  Runs in fixed-size batches (the last one padded) so that one program serves any N.
  """
  import numpy as np
  n = len(x)
  if n == 0:
    raise ValueError('predict: x is empty')
  apply = _compiled_apply(model)
  size = min(batch_size, n)
  out = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(apply(variables, chunk))[:size - pad])
  return np.concatenate(out)
