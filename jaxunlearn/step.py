"""Pure, jit-compiled step functions.

A step is ``(state, batch, key) -> (state, metrics)`` with static configuration (an
objective, :mod:`jaxunlearn.objectives`, and an optimizer) bound by
:func:`compiled_train_step`, which caches the compiled program so that every seed and every
method with the same configuration reuses it. Every task (classification, diffusion) runs
through these three steps: one optimizer step on one objective (:func:`train_step`), a joint
forget + retain step (:func:`forget_retain_step`) and a step along the forget gradient
(:func:`forget_step`); :class:`jaxunlearn.parallel.Parallel` makes each multi-device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.losses import reduce_loss, weighted_mean
from jaxunlearn.objectives import LossFn, labels_of  # noqa: F401  (re-exported)
from jaxunlearn.parallel import SINGLE, Parallel, shard_key


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


# Elements per flat chunk of :func:`_flat_chunks` (64 MiB of float32).
FLAT_CHUNK = 1 << 24


def _flat_chunks(leaves) -> list:
  """``leaves`` raveled and concatenated into as few flat arrays of at most
  :data:`FLAT_CHUNK` elements as their order allows (a larger leaf stays whole).

  A tree-wide reduction written per leaf is a hundred small reductions for a ResNet-18,
  and XLA:CPU compiles each as its own kernel: the training step with the per-leaf
  finiteness check compiled in 7.9 s, with one check of the concatenated leaves in 3.5 s
  (same step time). The chunks bound the concatenation's extra memory on large models.
  """
  chunks, current, size = [], [], 0
  for x in leaves:
    if current and size + x.size > FLAT_CHUNK:
      chunks.append(current)
      current, size = [], 0
    current.append(jnp.ravel(x))
    size += x.size
  if current:
    chunks.append(current)
  return [c[0] if len(c) == 1 else jnp.concatenate(c) for c in chunks]


def _all_finite(tree) -> jax.Array:
  """Whether every float leaf of ``tree`` is finite: leaves of at least
  ``Parallel.min_shard_size`` elements (those ``shard_params`` may split over devices)
  each checked where they are, the smaller ones in :func:`_flat_chunks`. Concatenating a
  split leaf would gather it whole on every device: under ``shard_params`` a step's
  collectives carried the whole update once more (DiT-XL/2: 2.6 GB per step) and each
  device held it."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  large = [x for x in leaves if x.size >= Parallel.min_shard_size]
  small = [x for x in leaves if x.size < Parallel.min_shard_size]
  checks = [jnp.all(jnp.isfinite(c)) for c in large + _flat_chunks(small)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


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


def batch_objective(objective, model_state, batch, key, axis_name=None):
  """``params -> (batch loss, (new model state, metrics))`` of an objective on a batch.

  The one place where a task's per-example objective (:mod:`jaxunlearn.objectives`)
  becomes a batch loss: weighted by ``w`` (0 for padding) and, with a loss that defines
  ``example_weights``, by those (:func:`jaxunlearn.losses.reduce_loss`); metrics are
  weighted means. Under ``pmap`` (``axis_name``) the loss is this device's share of the
  global-batch loss (its ``pmean`` over devices, and that of its gradient, are the global
  ones; see :func:`jaxunlearn.losses.weighted_mean`) and random draws are the global
  batch's (:func:`jaxunlearn.parallel.shard_key`).

  Args:
    objective: e.g. ``Classifier(model, cross_entropy)`` or ``Denoiser(model, ...)``.
    model_state: the model's other variable collections (BatchNorm statistics).
    batch: ``(x, y, w)``: inputs, targets, per-example weights ``[B]``.
    key: the batch's PRNG key.
    axis_name: the ``pmap`` device axis, or None.
  """
  x, y, w = batch

  def fn(params):
    per_example, new_model_state, per_metrics = objective(
        params, model_state, x, y, shard_key(key, x.shape[0], axis_name))
    metrics = {k: weighted_mean(v, w, axis_name) for k, v in per_metrics.items()}
    return (reduce_loss(objective.loss, per_example, w, axis_name),
            (new_model_state, metrics))
  return fn


def _pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _signed(fn, sign, params):
  """``fn(params)`` = ``(loss, aux)`` with the loss multiplied by ``sign``."""
  loss, aux = fn(params)
  return loss * sign, aux


def _loss_and_grads(params, model_state, batch, key, objective, axis_name=None, sign=None):
  """Global-batch loss, metrics and gradient (averaged over devices under ``pmap``), and
  the new model state; ``sign`` (a number) multiplies the loss first."""
  fn = batch_objective(objective, model_state, batch, key, axis_name)
  if sign is not None:
    fn = functools.partial(_signed, fn, sign)
  (loss, (new_model_state, metrics)), grads = jax.value_and_grad(fn, has_aux=True)(params)
  loss, metrics, grads = _pmean((loss, metrics, grads), axis_name)
  return loss, metrics, grads, new_model_state


def train_step(state: TrainState, x, y, w, base_key, *, objective,
               tx: optax.GradientTransformation, axis_name: str | None = None):
  """One optimizer step on the weighted mean of ``objective`` over a batch.

  Args:
    state: the current :class:`TrainState`.
    x: a batch of inputs ``[B, H, W, C]``.
    y: its targets: int labels ``[B]``, or a dict of ``[B, ...]`` arrays with a ``'label'``
      entry (e.g. teacher logits for distillation losses); passed to the loss as is.
    w: per-example weights ``[B]`` (0 for padding in the last, wrapped-around batch).
    base_key: PRNG key; the step's key is ``fold_in(base_key, state.step)``.
    objective, tx: static configuration (:mod:`jaxunlearn.objectives`; the optax chain).
    axis_name: under ``pmap``, the device axis (see :mod:`jaxunlearn.parallel`): losses,
      gradients and metrics are those of the global batch.

  Returns:
    ``(new_state, {'loss': scalar, **the objective's metrics (e.g. 'accuracy'), 'skipped':
    bool, 'nonfinite': int32})``: a step whose loss, update or BatchNorm statistics are not
    finite is not applied (``skipped``; ``nonfinite`` counts such steps in a row, see
    :func:`finish_step`).
  """
  from jaxunlearn.optim import gradient_sign
  key = jax.random.fold_in(base_key, state.step)
  loss, metrics, grads, model_state = _loss_and_grads(
      state.params, state.model_state, (x, y, w), key, objective, axis_name,
      gradient_sign(state.opt_state))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state, guard = finish_step(state, updates, opt_state, model_state, loss)
  return new_state, {'loss': loss, **metrics, **guard}


def tree_cosine(a, b):
  """Cosine similarity of two pytrees seen as flat vectors (0 if either is zero)."""
  dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  norm = optax.tree.norm(a) * optax.tree.norm(b)
  return jnp.where(norm > 0, dot / jnp.maximum(norm, 1e-30), 0.0)


def forget_retain_step(state: TrainState, forget_batch, retain_batch, base_key, *,
                       forget, retain, tx: optax.GradientTransformation,
                       forget_grads_at_params: bool = True, axis_name: str | None = None):
  """One joint step: ``updates`` = retain gradient, ``forget_grads`` = forget gradient.

  The chain decides how they combine (``combine_forget_retain``); BatchNorm statistics see the
  forget batch, then the retain batch, as two forward passes in one PyTorch step would.
  Transforms that re-evaluate losses also get ``forget_grad_fn``, ``forget_loss_fn`` and
  ``retain_loss_fn`` (params-only closures over the two batches, model state of the step's
  start, train mode), e.g. ``align_forget_retain``.

  Args:
    forget_batch, retain_batch: ``(x, y, w)`` tuples as in :func:`train_step`.
    forget, retain: their objectives (the forget one signed so that minimising it forgets).
    forget_grads_at_params: compute the forget gradient at ``params`` (and pass it as
      ``forget_grads``). False for chains that only evaluate the forget loss through the
      closures (LUR's look-ahead, virtual retain step): it saves a whole gradient per step;
      the forget batch then does not update BatchNorm's running statistics and the metrics
      have no forget loss or cosine.
    axis_name: as in :func:`train_step`; the closures are then device-local (transforms
      that call them take the same ``axis_name`` and average what they compute).

  Returns:
    ``(new_state, metrics)``: the retain loss and the retain objective's metrics, and (with
    ``forget_grads_at_params``) the forget loss and the cosine between the two gradients;
    ``skipped`` and ``nonfinite`` as in :func:`train_step`.
  """
  key = jax.random.fold_in(base_key, state.step)
  fkey, rkey = jax.random.split(key)
  model_state, extra, metrics = state.model_state, {}, {}
  if forget_grads_at_params:
    f_loss, _, f_grads, model_state = _loss_and_grads(
        state.params, model_state, forget_batch, fkey, forget, axis_name)
    extra['forget_grads'] = f_grads
  r_loss, r_metrics, r_grads, model_state = _loss_and_grads(
      state.params, model_state, retain_batch, rkey, retain, axis_name)
  if forget_grads_at_params:
    metrics = {'forget_loss': f_loss, 'grad_cosine': tree_cosine(f_grads, r_grads)}
  # Closures for look-ahead and curvature transforms (traced only if a transform calls them).
  f_obj = batch_objective(forget, state.model_state, forget_batch, fkey, axis_name)
  r_obj = batch_objective(retain, state.model_state, retain_batch, rkey, axis_name)
  forget_loss_fn = lambda p: f_obj(p)[0]
  updates, opt_state = tx.update(r_grads, state.opt_state, state.params, **extra,
                                 forget_grad_fn=jax.grad(forget_loss_fn),
                                 forget_loss_fn=forget_loss_fn,
                                 retain_loss_fn=lambda p: r_obj(p)[0])
  new_state, guard = finish_step(state, updates, opt_state, model_state, r_loss)
  return new_state, {'loss': r_loss, **r_metrics, **metrics, **guard}


def forget_step(state: TrainState, forget_batch, retain_batch, base_key, *, forget,
                retain, tx: optax.GradientTransformation, axis_name: str | None = None):
  """One step along the forget gradient (an SFR-on forget step).

  ``tx`` receives the forget gradient as ``updates`` and, when ``retain_batch`` is given,
  ``retain_loss_fn(params) -> scalar``: the retain batch's loss (train-mode forward, its
  BatchNorm statistics discarded), for transforms that need the remain geometry
  (``precondition_by_remain_hessian``). Without ``retain_batch`` nothing of it is computed.

  Returns:
    ``(new_state, {'loss': forget loss, **the forget objective's metrics, 'update_norm':
    norm of the update, 'skipped', 'nonfinite'})`` (as in :func:`train_step`).
  """
  key = jax.random.fold_in(base_key, state.step)
  fkey, rkey = jax.random.split(key)
  loss, metrics, grads, model_state = _loss_and_grads(
      state.params, state.model_state, forget_batch, fkey, forget, axis_name)
  extra = {}
  if retain_batch is not None:
    objective = batch_objective(retain, state.model_state, retain_batch, rkey, axis_name)
    extra['retain_loss_fn'] = lambda p: objective(p)[0]
  updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
  new_state, guard = finish_step(state, updates, opt_state, model_state, loss)
  return new_state, {'loss': loss, **metrics, 'update_norm': optax.tree.norm(updates),
                     **guard}


def _program(tx_factory):
  """The factory that keys a compiled step: ``OptimSpec.program()`` (one program for every
  learning rate and horizon that the spec keeps in the optimizer state), else itself."""
  program = getattr(tx_factory, 'program', None)
  return program() if callable(program) else tx_factory


def compiled_forget_step(forget, retain, tx_factory: Callable[..., Any],
                         parallel: Parallel = SINGLE):
  """:func:`forget_step` compiled for ``parallel``, cached like :func:`compiled_train_step`."""
  return _compiled_forget_step(forget, retain, _program(tx_factory), parallel)


@functools.lru_cache(maxsize=32)
def _compiled_forget_step(forget, retain, tx_factory, parallel):
  return parallel.compile(functools.partial(
      forget_step, forget=parallel.objective(forget), retain=parallel.objective(retain),
      tx=parallel.tx(tx_factory), axis_name=parallel.axis_name), 2)


def compiled_forget_retain_step(forget, retain, spec, parallel: Parallel = SINGLE):
  """:func:`forget_retain_step` compiled for ``parallel``, cached like
  :func:`compiled_train_step`, its chain ``make_tx(spec)``
  (:class:`jaxunlearn.optim.OptimSpec` with ``forget_weight``).

  The forget gradient at the current params is computed unless the spec says its chain
  does not use it (``spec.forget_grads_at_params`` false: LUR's virtual-retain look-ahead).
  """
  from jaxunlearn.optim import OptimSpec
  if not isinstance(spec, OptimSpec) or not spec.joint:
    raise ValueError('a joint step needs an OptimSpec with forget_weight (and every=0), '
                     f'got {spec!r}')
  return _compiled_forget_retain_step(forget, retain, spec.program(), parallel)


@functools.lru_cache(maxsize=64)
def _compiled_forget_retain_step(forget, retain, spec, parallel):
  return parallel.compile(functools.partial(
      forget_retain_step, forget=parallel.objective(forget), retain=parallel.objective(retain),
      tx=parallel.tx(spec), forget_grads_at_params=spec.forget_grads_at_params,
      axis_name=parallel.axis_name), 2)


def compiled_train_step(objective, tx_factory: Callable[..., Any],
                        parallel: Parallel = SINGLE):
  """:func:`train_step` compiled for ``parallel`` (default: ``jax.jit`` on one device),
  cached per (objective, optimizer factory, parallel).

  All must be hashable by value: objectives are frozen dataclasses of a flax module (hashable)
  and a loss (module-level functions and frozen dataclasses are), and ``tx_factory`` is a
  frozen dataclass whose call builds the optax transformation (e.g.
  :class:`jaxunlearn.optim.OptimSpec`; under ``pmap`` it is called with ``axis_name``).
  The compiled step takes ``(state, x, y, w, key)`` with a state placed by
  ``parallel.put`` and donates it. Factories with a ``program()`` (an
  :class:`~jaxunlearn.optim.OptimSpec`) are keyed by it: specs that keep their learning
  rate and horizon in the optimizer state share one compiled step.
  """
  relabel = _relabelled(objective, parallel)
  if relabel is not None:  # random labels drawn beside the step: the step is a CE step
    from jaxunlearn import losses
    plain = _compiled_train_step(dataclasses.replace(objective, loss=losses.cross_entropy),
                                 _program(tx_factory), parallel)
    return lambda state, x, y, w, key: plain(state, x, relabel(key, state.step, y), w, key)
  return _compiled_train_step(objective, _program(tx_factory), parallel)


@functools.lru_cache(maxsize=32)
def _relabelled(objective, parallel):
  """For an objective whose loss is CE on random labels (RL's, SalUn's forget loss), the
  compiled draw of those labels: the same draw the step would make
  (``random_labels(fold_in(key, step), y)``, per model in an ensemble), made beside the
  step, so that the step is the plain CE step's compiled program (the same numbers bit for
  bit; the step's ``accuracy`` metric is then against the drawn labels). ``None`` for other
  losses and over several devices (``pmap``, ``shard``: the step draws them itself, its
  batch split as it arrives)."""
  from jaxunlearn import losses
  exclude = {losses.random_label_cross_entropy: True,
             losses.random_label_cross_entropy_with_true: False}.get(
                 getattr(objective, 'loss', None))
  classes = getattr(getattr(objective, 'model', None), 'num_classes', None)
  if exclude is None or classes is None or parallel.mode not in ('none', 'vmap'):
    return None
  def one(key, step, y):
    return losses.random_labels(jax.random.fold_in(key, step), y, classes, exclude)
  return jax.jit(jax.vmap(one) if parallel.mode == 'vmap' else one)


@functools.lru_cache(maxsize=128)
def _compiled_train_step(objective, tx_factory, parallel):
  def step(state, batch, key):
    return train_step(state, *batch, key, objective=parallel.objective(objective),
                      tx=parallel.tx(tx_factory), axis_name=parallel.axis_name)
  compiled = parallel.compile(step, 1)
  return lambda state, x, y, w, key: compiled(state, (x, y, w), key)


@functools.lru_cache(maxsize=32)
def _compiled_apply(model: nn.Module, parallel: Parallel = SINGLE, options: tuple = ()):
  return parallel.batched(
      lambda variables, x: model.apply(variables, x, train=False, **dict(options)),
      per_example=True, run_once=True)  # LLVM -O1 on the CPU: the same logits, bit for bit


def predict(model: nn.Module, variables, x, batch_size: int = 512,
            parallel: Parallel = SINGLE, **apply_options):
  """Eval-mode logits for all of ``x`` as a float32 numpy array ``[N, num_classes]``
  (or what ``model.apply(variables, x, train=False, **apply_options)`` returns per example,
  e.g. a ResNet's ``features=True``).

  Runs in fixed-size batches (the last one padded) so that one program serves any N;
  with ``parallel``, each batch is split over its devices. An ensemble's (``parallel``
  mode 'vmap', variables with a model axis) logits are ``[models, N, num_classes]``.
  """
  n = len(x)
  if n == 0:
    raise ValueError('predict: x is empty')
  apply = _compiled_apply(model, parallel, tuple(sorted(apply_options.items())))
  size = -(-min(batch_size, n) // parallel.size) * parallel.size
  out = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(apply(variables, chunk))
  if parallel.is_ensemble:  # [models, rows, ...]
    return np.concatenate([np.asarray(o) for o in out], axis=1)[:, :n]
  return parallel.rows(out, n)  # (across processes: one gather for all of x)
