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
import numpy as np
import optax

from jaxunlearn.losses import reduce_loss, weighted_mean
from jaxunlearn.parallel import SINGLE, Parallel, shard_key

LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class TrainState(NamedTuple):
  """Everything a training or unlearning loop carries from step to step.

  Attributes:
    params: the model's trainable parameters.
    model_state: the model's other variable collections (BatchNorm ``batch_stats``).
    opt_state: the optax state of the transformation chain.
    step: int32 scalar, number of steps taken (skipped ones included); per-step keys fold
      it into the base key.
    nonfinite: int32 scalar, how many of the last steps in a row were skipped because
      something they computed was not finite (0 after any step that was applied).
    skipped: int32 scalar, how many steps were skipped in all.
  """

  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array
  nonfinite: jax.Array = 0
  skipped: jax.Array = 0

  @property
  def variables(self):
    return {'params': self.params, **self.model_state}


def init_state(variables, tx: optax.GradientTransformation) -> TrainState:
  """A fresh :class:`TrainState` for ``variables`` (a flax variables dict)."""
  params = variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  counters = [jnp.zeros([], jnp.int32) for _ in range(3)]  # distinct buffers: all donated
  return TrainState(params, model_state, tx.init(params), *counters)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def finish_step(state: TrainState, updates, opt_state, model_state, loss):
  """The state after a step, or, if its loss, update or new model state is not finite,
  the state before it with the skip counted (``optax.apply_if_finite`` at the level of
  the whole step: a diverged forward pass would also poison BatchNorm's running
  statistics, which an optimizer wrapper cannot hold back).

  Returns ``(new_state, {'skipped': 0/1, 'nonfinite': steps skipped in a row})``. Under
  ``pmap`` every input is already averaged over devices, so all take the same branch.
  """
  ok = _all_finite((loss, updates, model_state))
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  nonfinite = jnp.where(ok, 0, state.nonfinite + 1).astype(jnp.int32)
  new_state = TrainState(keep(params, state.params), keep(model_state, state.model_state),
                         keep(opt_state, state.opt_state), optax.safe_increment(state.step),
                         nonfinite, (state.skipped + (~ok).astype(jnp.int32)).astype(jnp.int32))
  return new_state, {'skipped': ~ok, 'nonfinite': nonfinite}


def labels_of(y):
  """The integer labels of a batch's targets: ``y`` itself, or ``y['label']``."""
  return y['label'] if isinstance(y, dict) else y


def batch_objective(model_state, x, y, w, key, model, loss_fn, axis_name=None):
  """``params -> (batch loss, (new model state, logits))``, the model in train mode.

  Under ``pmap`` (``axis_name``) the loss is this device's share of the global-batch loss
  (its ``pmean`` over devices, and that of its gradient, are the global ones; see
  :func:`jaxunlearn.losses.weighted_mean`) and random draws are the global batch's.
  """
  def objective(p):
    logits, new_model_state = model.apply({'params': p, **model_state}, x, train=True,
                                          mutable=list(model_state))
    per_example = loss_fn(logits, y, shard_key(key, x.shape[0], axis_name))
    return (reduce_loss(loss_fn, per_example, w, axis_name),
            (dict(new_model_state), logits))
  return objective


def _pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _loss_and_grads(params, model_state, x, y, w, key, model, loss_fn, axis_name=None):
  """Global-batch loss, accuracy and gradient (averaged over devices under ``pmap``)."""
  objective = batch_objective(model_state, x, y, w, key, model, loss_fn, axis_name)
  (loss, (new_model_state, logits)), grads = jax.value_and_grad(objective, has_aux=True)(params)
  accuracy = weighted_mean((jnp.argmax(logits, -1) == labels_of(y)).astype(jnp.float32), w,
                           axis_name)
  loss, accuracy, grads = _pmean((loss, accuracy, grads), axis_name)
  return loss, accuracy, grads, new_model_state


def train_step(state: TrainState, x, y, w, base_key, *, model: nn.Module, loss_fn: LossFn,
               tx: optax.GradientTransformation, axis_name: str | None = None):
  """One optimizer step on the weighted mean of ``loss_fn`` over a batch.

  Args:
    state: the current :class:`TrainState`.
    x: a batch of inputs ``[B, H, W, C]``.
    y: its targets: int labels ``[B]``, or a dict of ``[B, ...]`` arrays with a ``'label'``
      entry (e.g. teacher logits for distillation losses); passed to ``loss_fn`` as is.
    w: per-example weights ``[B]`` (0 for padding in the last, wrapped-around batch).
    base_key: PRNG key; the step's key is ``fold_in(base_key, state.step)``.
    model, loss_fn, tx: static configuration.
    axis_name: under ``pmap``, the device axis (see :mod:`jaxunlearn.parallel`): losses,
      gradients and metrics are those of the global batch.

  Returns:
    ``(new_state, {'loss': scalar, 'accuracy': scalar, 'skipped': bool, 'nonfinite':
    int32})``: a step whose loss, update or BatchNorm statistics are not finite is not
    applied (``skipped``; ``nonfinite`` counts such steps in a row, see :func:`finish_step`).
  """
  key = jax.random.fold_in(base_key, state.step)
  loss, accuracy, grads, model_state = _loss_and_grads(
      state.params, state.model_state, x, y, w, key, model, loss_fn, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state, guard = finish_step(state, updates, opt_state, model_state, loss)
  return new_state, {'loss': loss, 'accuracy': accuracy, **guard}


def tree_cosine(a, b):
  """Cosine similarity of two pytrees seen as flat vectors (0 if either is zero)."""
  dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  norm = optax.tree.norm(a) * optax.tree.norm(b)
  return jnp.where(norm > 0, dot / jnp.maximum(norm, 1e-30), 0.0)


def forget_retain_step(state: TrainState, forget_batch, retain_batch, base_key, *,
                       model: nn.Module, forget_loss: LossFn, retain_loss: LossFn,
                       tx: optax.GradientTransformation, forget_grads_at_params: bool = True,
                       axis_name: str | None = None):
  """One joint step: ``updates`` = retain gradient, ``forget_grads`` = forget gradient.

  The chain decides how they combine (``combine_forget_retain``); BatchNorm statistics see the
  forget batch, then the retain batch, as two forward passes in one PyTorch step would.
  Transforms that re-evaluate losses also get ``forget_grad_fn``, ``forget_loss_fn`` and
  ``retain_loss_fn`` (params-only closures over the two batches, BatchNorm statistics of
  the step's start, train mode), e.g. ``align_forget_retain``.

  Args:
    forget_batch, retain_batch: ``(x, y, w)`` tuples as in :func:`train_step`.
    forget_grads_at_params: compute the forget gradient at ``params`` (and pass it as
      ``forget_grads``). False for chains that only evaluate the forget loss through the
      closures (LUR's look-ahead, virtual retain step): it saves a whole gradient per step;
      the forget batch then does not update BatchNorm's running statistics and the metrics
      have no forget loss or cosine.
    axis_name: as in :func:`train_step`; the closures are then device-local (transforms
      that call them take the same ``axis_name`` and average what they compute).

  Returns:
    ``(new_state, metrics)``: the retain loss and accuracy, and (with
    ``forget_grads_at_params``) the forget loss and the cosine between the two gradients;
    ``skipped`` and ``nonfinite`` as in :func:`train_step`.
  """
  key = jax.random.fold_in(base_key, state.step)
  fkey, rkey = jax.random.split(key)
  model_state, extra, metrics = state.model_state, {}, {}
  if forget_grads_at_params:
    f_loss, _, f_grads, model_state = _loss_and_grads(
        state.params, model_state, *forget_batch, fkey, model, forget_loss, axis_name)
    extra['forget_grads'] = f_grads
  r_loss, r_acc, r_grads, model_state = _loss_and_grads(
      state.params, model_state, *retain_batch, rkey, model, retain_loss, axis_name)
  if forget_grads_at_params:
    metrics = {'forget_loss': f_loss, 'grad_cosine': tree_cosine(f_grads, r_grads)}
  # Closures for look-ahead and curvature transforms (traced only if a transform calls them).
  f_obj = batch_objective(state.model_state, *forget_batch, fkey, model, forget_loss,
                          axis_name)
  r_obj = batch_objective(state.model_state, *retain_batch, rkey, model, retain_loss,
                          axis_name)
  forget_loss_fn = lambda p: f_obj(p)[0]
  updates, opt_state = tx.update(r_grads, state.opt_state, state.params, **extra,
                                 forget_grad_fn=jax.grad(forget_loss_fn),
                                 forget_loss_fn=forget_loss_fn,
                                 retain_loss_fn=lambda p: r_obj(p)[0])
  new_state, guard = finish_step(state, updates, opt_state, model_state, r_loss)
  return new_state, {'loss': r_loss, 'accuracy': r_acc, **metrics, **guard}


def forget_step(state: TrainState, forget_batch, retain_batch, base_key, *, model: nn.Module,
                forget_loss: LossFn, retain_loss: LossFn, tx: optax.GradientTransformation,
                axis_name: str | None = None):
  """One step along the forget gradient (an SFR-on forget step).

  ``tx`` receives the forget gradient as ``updates`` and, when ``retain_batch`` is given,
  ``retain_loss_fn(params) -> scalar``: the retain batch's loss (train-mode forward, its
  BatchNorm statistics discarded), for transforms that need the remain geometry
  (``precondition_by_remain_hessian``). Without ``retain_batch`` nothing of it is computed.

  Returns:
    ``(new_state, {'loss': forget loss, 'accuracy': on the forget batch,
    'update_norm': norm of the update, 'skipped', 'nonfinite'})`` (as in :func:`train_step`).
  """
  key = jax.random.fold_in(base_key, state.step)
  fkey, rkey = jax.random.split(key)
  loss, accuracy, grads, model_state = _loss_and_grads(
      state.params, state.model_state, *forget_batch, fkey, model, forget_loss, axis_name)
  extra = {}
  if retain_batch is not None:
    objective = batch_objective(state.model_state, *retain_batch, rkey, model, retain_loss,
                                axis_name)
    extra['retain_loss_fn'] = lambda p: objective(p)[0]
  updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
  new_state, guard = finish_step(state, updates, opt_state, model_state, loss)
  return new_state, {'loss': loss, 'accuracy': accuracy,
                     'update_norm': optax.tree.norm(updates), **guard}


@functools.lru_cache(maxsize=32)
def compiled_forget_step(model: nn.Module, forget_loss: LossFn, retain_loss: LossFn,
                         tx_factory: Callable[..., Any], parallel: Parallel = SINGLE):
  """:func:`forget_step` compiled for ``parallel``, cached like :func:`compiled_train_step`."""
  return parallel.compile(functools.partial(
      forget_step, model=parallel.model(model), forget_loss=forget_loss,
      retain_loss=retain_loss, tx=parallel.tx(tx_factory), axis_name=parallel.axis_name), 2)


@functools.lru_cache(maxsize=64)
def compiled_forget_retain_step(model: nn.Module, forget_loss: LossFn, retain_loss: LossFn,
                                tx_factory: Callable[..., Any], parallel: Parallel = SINGLE):
  """:func:`forget_retain_step` compiled for ``parallel``, cached like
  :func:`compiled_train_step`.

  The forget gradient at the current params is computed unless ``tx_factory`` says its
  chain does not use it (``tx_factory.uses_forget_grads`` false, e.g. LUR's config).
  """
  return parallel.compile(functools.partial(
      forget_retain_step, model=parallel.model(model), forget_loss=forget_loss,
      retain_loss=retain_loss, tx=parallel.tx(tx_factory),
      forget_grads_at_params=getattr(tx_factory, 'uses_forget_grads', True),
      axis_name=parallel.axis_name), 2)


@functools.lru_cache(maxsize=128)
def compiled_train_step(model: nn.Module, loss_fn: LossFn, tx_factory: Callable[..., Any],
                        parallel: Parallel = SINGLE):
  """:func:`train_step` compiled for ``parallel`` (default: ``jax.jit`` on one device),
  cached per (model, loss, optimizer factory, parallel).

  All must be hashable by value: flax modules are, module-level loss functions are, and
  ``tx_factory`` is a frozen dataclass whose call builds the optax transformation (e.g.
  :class:`jaxunlearn.train.OptimConfig`; under ``pmap`` it is called with ``axis_name``).
  The compiled step takes ``(state, x, y, w, key)`` with a state placed by
  ``parallel.put`` and donates it.
  """
  def step(state, batch, key):
    return train_step(state, *batch, key, model=parallel.model(model), loss_fn=loss_fn,
                      tx=parallel.tx(tx_factory), axis_name=parallel.axis_name)
  compiled = parallel.compile(step, 1)
  return lambda state, x, y, w, key: compiled(state, (x, y, w), key)


@functools.lru_cache(maxsize=32)
def _compiled_apply(model: nn.Module, parallel: Parallel = SINGLE):
  return parallel.batched(lambda variables, x: model.apply(variables, x, train=False),
                          per_example=True)


def predict(model: nn.Module, variables, x, batch_size: int = 512,
            parallel: Parallel = SINGLE):
  """Eval-mode logits for all of ``x`` as a float32 numpy array ``[N, num_classes]``.

  Runs in fixed-size batches (the last one padded) so that one program serves any N;
  with ``parallel``, each batch is split over its devices. An ensemble's (``parallel``
  mode 'vmap', variables with a model axis) logits are ``[models, N, num_classes]``.
  """
  n = len(x)
  if n == 0:
    raise ValueError('predict: x is empty')
  apply = _compiled_apply(model, parallel)
  size = -(-min(batch_size, n) // parallel.size) * parallel.size
  out = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    logits = np.asarray(apply(variables, chunk))
    out.append(logits[:, :size - pad] if parallel.is_ensemble else logits[:size - pad])
  return np.concatenate(out, axis=1 if parallel.is_ensemble else 0)
