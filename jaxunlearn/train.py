"""Training loops: the original model, Retrain, and the pass structure unlearning shares.

The loops of every task: :func:`fit` (phases in turn), :func:`fit_joint` (forget + retain
steps) and :func:`fit_fast_slow` (SFR-on), all on :func:`run_updates` (resume, non-finite
guard, progress, callbacks). A task plugs in through the objectives of its phases
(:mod:`jaxunlearn.objectives`): the loops know nothing of logits or noise.

A loop of :func:`fit` is a list of :class:`Phase` s run in order every epoch (FT: one
retain phase; RL and SalUn: a forget phase then a retain phase, as in the SalUn reference
code), all sharing one optimizer state. Batches are drawn on the host from a per-(seed,
epoch) permutation; the last batch of a phase wraps around to keep one compiled shape, its
wrapped examples weighted 0.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxunlearn.hparams import (Hyperparameters, at_least_one, hparam, non_negative, one_of,
                                positive, probability)
from jaxunlearn.parallel import SINGLE, Parallel, jit_run_once
from jaxunlearn.losses import cross_entropy
from jaxunlearn.objectives import Classifier, labels_of
from jaxunlearn.optim import INJECTED_STATES, OptimSpec, PairHalf
from jaxunlearn.step import (compiled_forget_retain_step, compiled_forget_step,
                             compiled_train_step, init_state)


@dataclasses.dataclass(frozen=True)
class Phase:
  """A pass over one dataset with one objective, once per epoch.

  Attributes:
    x: inputs ``[N, ...]``.
    y: targets: int labels ``[N]`` or a dict of ``[N, ...]`` arrays with a ``'label'`` entry.
    objective: what the steps minimise on it (:mod:`jaxunlearn.objectives`, hashable), e.g.
      ``Classifier(model, cross_entropy)``; tasks build it (``task.phase(...)``).
    name: key of its losses in the history.
    epochs: run only in the first ``epochs`` epochs (None: every epoch), e.g. SCRUB's
      forget "max-steps".
  """

  x: np.ndarray
  y: Any
  objective: Any
  name: str = 'train'
  epochs: int | None = None

  def __len__(self):
    return len(labels_of(self.y))

  def batch(self, idx, w):
    return self.x[idx], jax.tree.map(lambda a: a[idx], self.y), w

  def active(self, epoch: int) -> bool:
    return self.epochs is None or epoch < self.epochs



LOG_INTERVAL_S = 10.0  # without a terminal: one progress line per this many seconds


def progress_bar(iterable=None, **kwargs):
  """tqdm as the situation wants it: a live bar in a terminal or a notebook; in a log (CI,
  ``nohup``, a pipe) a line every :data:`LOG_INTERVAL_S` seconds instead of one per
  refresh."""
  import sys
  notebook = tqdm.__module__.startswith('tqdm.notebook')  # tqdm.auto chose the widget
  interactive = notebook or getattr(sys.stderr, 'isatty', lambda: False)()
  if not interactive:
    kwargs.setdefault('mininterval', LOG_INTERVAL_S)
    kwargs.setdefault('maxinterval', LOG_INTERVAL_S)
    kwargs['dynamic_ncols'] = False  # no terminal to measure
  return tqdm(iterable, **kwargs)

def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  multiple_of: int = 1):
  """Yields ``(indices, weights)`` of fixed size ``batch_size`` covering ``0..n-1`` once.

  The permutation is a pure function of (seed, epoch). The last batch is completed by
  wrapping around the permutation; those repeats get weight 0, so each example counts once.
  ``multiple_of`` (the device count) must divide ``batch_size``; a set smaller than the
  batch gets its size rounded up to a multiple of it the same way (its weight-0 repeats
  then enter BatchNorm's batch statistics, the one difference from a single device).
  """
  if n == 0:
    raise ValueError('cannot draw batches from an empty set')
  order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
  size = _batch_size(n, batch_size, multiple_of)
  steps = math.ceil(n / size)
  padded = np.resize(order, steps * size)
  weights = (np.arange(steps * size) < n).astype(np.float32)
  for s in range(steps):
    sl = slice(s * size, (s + 1) * size)
    yield padded[sl], weights[sl]


def _batch_size(n: int, batch_size: int, multiple_of: int = 1) -> int:
  if batch_size % multiple_of:
    raise ValueError(f'batch size {batch_size} does not split over {multiple_of} devices; '
                     f'use a multiple of {multiple_of}')
  return -(-min(batch_size, n) // multiple_of) * multiple_of


def num_batches(n: int, batch_size: int, multiple_of: int = 1) -> int:
  """How many batches :func:`epoch_batches` yields for a set of ``n``."""
  return math.ceil(n / _batch_size(n, batch_size, multiple_of))


def ensemble_seeds(seed, parallel: Parallel) -> list[int] | None:
  """The seeds of an ensemble (``parallel`` mode 'vmap': one per model), None for one
  model; raises ValueError when ``seed`` does not fit ``parallel``."""
  if not parallel.is_ensemble:
    if not isinstance(seed, (int, np.integer)):
      raise ValueError(f'one model takes one int seed, got {seed!r}; several seeds train '
                       'an ensemble: pass parallel=Parallel.ensemble(len(seeds))')
    return None
  seeds = [int(s) for s in np.atleast_1d(seed)]
  if len(seeds) != parallel.models:
    raise ValueError(f'an ensemble of {parallel.models} models needs {parallel.models} seeds, '
                     f'got {len(seeds)}')
  return seeds


def _base_key(seed, parallel: Parallel):
  seeds = ensemble_seeds(seed, parallel)
  return jax.random.key(seed) if seeds is None else jax.vmap(jax.random.key)(jnp.asarray(seeds))


def _stack(rows):
  return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def _epoch(n: int, batch_size: int, seed, stream: int, epoch: int, parallel: Parallel):
  """One epoch's ``(indices, weights)`` of stream ``stream`` (0: the first phase or the
  retain set, 1: the forget set, ...); an ensemble's are ``[models, B]``, each model's
  those it would draw alone."""
  seeds = ensemble_seeds(seed, parallel)
  if seeds is None:
    yield from epoch_batches(n, batch_size, seed * 1000 + stream, epoch,
                             multiple_of=parallel.size)
    return
  for rows in zip(*[epoch_batches(n, batch_size, s * 1000 + stream, epoch) for s in seeds]):
    yield _stack(rows)


def _cycle(n: int, batch_size: int, seed, stream: int, parallel: Parallel):
  seeds = ensemble_seeds(seed, parallel)
  if seeds is None:
    return cycle_batches(n, batch_size, seed * 1000 + stream, parallel.size)
  return map(_stack, zip(*[cycle_batches(n, batch_size, s * 1000 + stream) for s in seeds]))


def _init_masked(variables, tx_factory, mask, parallel: Parallel = SINGLE, fisher=None):
  """A fresh state for ``tx_factory()`` with ``mask`` and the elastic penalty's ``fisher``
  (if given) installed, placed for ``parallel``'s compiled steps (an ensemble's variables
  and masks have a model axis)."""
  from jaxunlearn.transforms import set_elastic_fisher, set_saliency_mask

  def init(v, m, f):
    state = init_state(jax.device_get(v), tx_factory())  # a host copy: the steps donate it
    if m is not None:
      state = state._replace(opt_state=set_saliency_mask(state.opt_state, m))
    if f is not None:
      state = state._replace(opt_state=set_elastic_fisher(state.opt_state, f))
    return state
  if parallel.is_ensemble:  # model by model (mask checks run on the host), then stacked
    pick = lambda tree, i: None if tree is None else jax.tree.map(lambda a: a[i], tree)  # noqa: E731
    states = [init(pick(variables, i), pick(mask, i), pick(fisher, i))
              for i in range(parallel.models)]
    return jax.tree.map(lambda *a: jnp.stack(a), *states)
  return parallel.put(init(variables, mask, fisher))


def _spec(optim, fast_slow: bool = False) -> OptimSpec:
  if not isinstance(optim, OptimSpec):
    raise TypeError(f'optim must be a jaxunlearn.optim.OptimSpec, got {type(optim).__name__}')
  if optim.fast_slow != fast_slow:
    raise ValueError('fit_fast_slow takes a spec with every > 0 (a forget step every `every` '
                     'iterations); fit and fit_joint take one with every=0'
                     + (f', got every={optim.every}' if optim.every else ''))
  return optim


def _start(variables, optim: OptimSpec, total: int, mask, parallel: Parallel, fisher=None):
  optim = _spec(optim).over(total)  # schedules span the whole loop
  return optim, _init_masked(variables, optim, mask, parallel, fisher)


def _length(epochs: int | None, steps: int | None, phases) -> None:
  """Checks that a loop is given its length one way: ``epochs`` or ``steps``."""
  if (epochs is None) == (steps is None):
    raise ValueError(f'give a loop either epochs or steps, got epochs={epochs}, steps={steps}')
  if (epochs if steps is None else steps) < 0:
    raise ValueError(f'epochs and steps must be >= 0, got epochs={epochs}, steps={steps}')
  if steps is not None and any(p.epochs is not None for p in phases):
    raise ValueError('a loop of steps runs its phases until it is done: a phase with a '
                     'limited number of epochs needs a loop of epochs')


class NonFiniteError(FloatingPointError):
  """A loop took ``max_nonfinite`` non-finite steps in a row (it diverged)."""


@dataclasses.dataclass
class LoopControl:
  """How a loop guards and checkpoints itself, and what it reports back.

  Attributes:
    checkpoint: a :class:`jaxunlearn.checkpoint.LoopCheckpoint`: the loop resumes from its
      newest checkpoint and saves one every ``checkpoint.every`` updates (None: neither).
    max_nonfinite: a step whose loss, update or BatchNorm statistics are not finite is
      skipped (not applied) and counted; this many in a row stop the loop with
      :class:`NonFiniteError` (None: never stop).
    skipped: (set by the loop) how many steps it skipped.
    resumed_from: (set by the loop) the update it resumed at, None if it started afresh.
    overhead_seconds: (set by the loop) seconds spent saving and restoring checkpoints,
      which :meth:`elapsed` includes and a run's reported time leaves out.
  """

  checkpoint: Any = None
  max_nonfinite: int | None = 10
  skipped: int = 0
  resumed_from: int | None = None
  overhead_seconds: float = 0.0
  _origin: float = dataclasses.field(default_factory=time.perf_counter, repr=False)

  def __post_init__(self):
    if self.max_nonfinite is not None and self.max_nonfinite < 1:
      raise ValueError(f'max_nonfinite must be >= 1 (or None: never stop), got '
                       f'{self.max_nonfinite}')

  def start_clock(self) -> None:
    """Starts :meth:`elapsed` at 0 (a run starts it when the method starts)."""
    self._origin = time.perf_counter()

  def elapsed(self) -> float:
    """Seconds since :meth:`start_clock`, counting the segments before a resume (the time
    an uninterrupted run would have taken up to here)."""
    return time.perf_counter() - self._origin

  def _resume_clock(self, seconds: float) -> None:
    self._origin = time.perf_counter() - seconds


def _numbers_of_the_spec(fresh, restored):
  """``restored`` with the learning rate and horizon that the optimizer spec puts in the
  state (``optax.inject_hyperparams``; :attr:`~jaxunlearn.optim.OptimSpec.numbers_in_state`)
  taken from ``fresh``, the state the spec made now: they are the spec's constants, not
  something the run learned, so a checkpoint written when they were stored differently
  (a constant rate's horizon before it became infinite) resumes with the spec's."""
  def take(new, old):
    return old._replace(hyperparams=new.hyperparams) if isinstance(old, INJECTED_STATES) else old
  return jax.tree.map(take, fresh, restored,
                      is_leaf=lambda x: isinstance(x, INJECTED_STATES))


def run_updates(state, plan, total: int, *, parallel: Parallel, control: LoopControl | None,
           callback, callback_every: int, desc: str, progress: bool, history: Sequence[str]):
  """Runs a loop's updates: resume, guard against non-finite steps, checkpoint, report
  (what :func:`fit`, :func:`fit_joint` and :func:`fit_fast_slow` share).

  ``plan`` yields one ``(run, record)`` per update, in order: ``run(state) -> (state,
  metrics)`` takes the step (gathering its batch only when called, so that resuming past an
  update costs only the batch *draw*, which must happen to keep the iterators in place),
  ``record`` maps metric names to the history keys they are appended to.

  Returns ``(final placed state, history as float32 arrays)``.
  """
  control = control if control is not None else LoopControl()
  ckpt = control.checkpoint
  done = 0
  saved = {k: [] for k in history}  # host floats (what a checkpoint holds)
  fresh = {k: [] for k in history}  # device scalars of the steps since
  if ckpt is not None:
    start = time.perf_counter()
    made_now = parallel.get(state)
    restored = ckpt.restore(made_now)
    if restored is not None:
      done, host_state, record = restored
      state = parallel.put(_numbers_of_the_spec(made_now, host_state))
      saved = {k: list(record['history'].get(k, [])) for k in history}
      if callback is not None and hasattr(callback, 'load_state_dict') and 'callback' in record:
        callback.load_state_dict(record['callback'])
      control.resumed_from = done
      control._resume_clock(record['seconds'])
      control.overhead_seconds = record['overhead_seconds']
    control.overhead_seconds += time.perf_counter() - start

  def check(metrics, at):
    if metrics is None or control.max_nonfinite is None:
      return
    count = int(metrics['nonfinite'])  # metrics are one replica's (Parallel.compile)
    if count >= control.max_nonfinite:
      control.skipped = int(np.sum(parallel.get(state.skipped)))
      loss = float(metrics['loss'])
      raise NonFiniteError(
          f'{desc}: {count} steps in a row up to update {at} of {total} had a non-finite loss, '
          f'gradient or BatchNorm statistic (last loss {loss}); they were skipped, and the '
          f'run stopped. It diverged: lower its learning rate (--set {desc}.lr=...), clip its '
          'gradients, or allow more such steps (--max-nonfinite)')

  bar = progress_bar(total=total, initial=done, desc=desc, disable=not progress, leave=False,
                     dynamic_ncols=True)
  previous = None
  for i, (run, record) in enumerate(plan):
    if i < done:
      continue
    state, metrics = run(state)
    for name, key in record.items():
      if name in metrics:  # e.g. LUR's joint steps have no forget loss at the params
        fresh[key].append(metrics[name])
    check(previous, done)  # the step before: ready, or nearly, while this one runs
    if progress and previous is not None and done % 10 == 0:
      bar.set_postfix(loss=f'{float(previous["loss"]):.3f}')
    previous = metrics
    done += 1
    bar.update(1)
    if callback is not None and callback_every and done % callback_every == 0:
      callback(done, parallel.get(state.variables))
    if ckpt is not None and done % ckpt.every == 0 and done < total:
      check(metrics, done)  # never save a run that has already failed
      start = time.perf_counter()
      for key, values in fresh.items():
        saved[key] += [float(v) for v in np.asarray(jax.device_get(values)).ravel()]
        fresh[key] = []
      ckpt.save(done, parallel.get(state), {  # times as of now: a resume continues from here
          'history': saved, 'seconds': control.elapsed(),
          'overhead_seconds': control.overhead_seconds + time.perf_counter() - start,
          'callback': callback.state_dict() if hasattr(callback, 'state_dict') else None})
      control.overhead_seconds += time.perf_counter() - start
  bar.close()
  check(previous, done)
  control.skipped = int(np.sum(parallel.get(state.skipped)))  # an ensemble's: all models
  if callback is not None and (not callback_every or total % callback_every):
    callback(total, parallel.get(state.variables))
  out = {k: np.asarray(saved[k] + [float(v) for v in np.asarray(jax.device_get(fresh[k]))
                                   .ravel()], np.float32) for k in history}
  return state, out


def fit(variables, phases: Sequence[Phase], *, epochs: int | None = None,
        steps: int | None = None, batch_size: int, optim, seed, desc: str = 'train',
        progress: bool = True, mask=None, callback=None, callback_every: int = 0,
        parallel: Parallel = SINGLE, control: LoopControl | None = None):
  """Runs ``phases`` from ``variables``, epoch after epoch; returns (variables, history).

  Args:
    variables: the starting flax variables (an ensemble's with a leading model axis).
    phases: the passes of an epoch, in order, one optimizer state for all; each has its own
      objective (:class:`Phase`).
    epochs: how many epochs; or ``steps``: how many optimizer steps (the phases then run
      over and over, e.g. 200 steps of gradient ascent on a diffusion model).
    batch_size: examples per step (rounded up to a multiple of the devices).
    optim: the optimizer (:class:`jaxunlearn.optim.OptimSpec`, ``every=0``); its
      ``total_steps`` is filled in from the data so a schedule spans the whole run.
    seed: the run's seed (an ensemble: one per model).
    mask: (with ``optim.saliency``) installed into the optimizer state before the first step.
    callback: ``callback(steps, variables)``, every ``callback_every`` steps and at the end.
    parallel: the devices the steps run on (:mod:`jaxunlearn.parallel`).
    control: checkpoints to resume from and save, and the non-finite-step guard
      (:class:`LoopControl`; default: no checkpoints, stop after 10 non-finite steps in a row).

  Returns:
    ``(variables, history)``: the per-step loss of every phase, keyed by phase name. With
    ``optim.ema_decay`` the variables' params are the average of the params over the run
    (bias-corrected), the sampling weights of a diffusion model.
  """
  _length(epochs, steps, phases)
  m = parallel.size
  if steps is None:
    total = sum(num_batches(len(p), batch_size, m) for e in range(epochs) for p in phases
                if p.active(e))
  else:
    total = steps
  optim, state = _start(variables, optim, total, mask, parallel)
  base_key = _base_key(seed, parallel)

  def plan():
    for epoch in (range(epochs) if steps is None else itertools.count()):
      for phase_id, phase in enumerate(phases):
        if not phase.active(epoch):
          continue
        step = compiled_train_step(phase.objective, optim, parallel)
        for idx, w in _epoch(len(phase), batch_size, seed, phase_id, epoch, parallel):
          yield (lambda st, step=step, batch=functools.partial(phase.batch, idx, w):
                 step(st, *batch(), base_key)), {'loss': phase.name}

  state, history = run_updates(state, itertools.islice(plan(), total), total,
                               parallel=parallel, control=control, callback=callback,
                               callback_every=callback_every, desc=desc, progress=progress,
                               history=[p.name for p in phases])
  return _final_variables(state, optim, parallel), history


def _final_variables(state, optim: OptimSpec, parallel: Parallel):
  """The variables a loop returns: the last ones, or with ``optim.ema_decay`` the average
  of the params (:func:`jaxunlearn.transforms.ema_params`) with the last model state."""
  variables = parallel.get(state.variables)
  if not optim.ema_decay:
    return variables
  from jaxunlearn.transforms import ema_params
  return {**variables, 'params': ema_params(parallel.get(state.opt_state), variables['params'])}


def cycle_batches(n: int, batch_size: int, seed: int, multiple_of: int = 1):
  """Endless fixed-size batches over ``0..n-1``, reshuffled at every pass."""
  for cycle in itertools.count():
    yield from epoch_batches(n, batch_size, seed, cycle, multiple_of=multiple_of)


def fit_joint(variables, forget: Phase, retain: Phase, *, epochs: int | None = None,
              steps: int | None = None, batch_size: int, optim, seed, desc: str = 'joint',
              progress: bool = True, mask=None, fisher=None, callback=None,
              callback_every: int = 0, parallel: Parallel = SINGLE,
              control: LoopControl | None = None, cycle_forget: bool = True):
  """Joint steps: each retain batch is paired with the next forget batch (the forget set
  is cycled, reshuffled at each pass), one optimizer step per pair, for ``epochs`` passes
  over the retain set or ``steps`` steps. ``cycle_forget=False`` (epochs only) pairs each
  epoch's first retain batches with one pass over the forget set and the rest with an empty
  (weight-0) forget batch: retain-only steps, as ``zip_longest(retain, forget)``.

  ``optim.forget_weight`` must be set (the chain combines the two gradients). ``fisher``
  (with ``optim.elastic``) is the elastic penalty's Fisher, installed before the first step.
  Returns ``(variables, history)`` with per-step 'retain' and 'forget' losses and
  'grad_cosine', the cosine between the forget and retain gradients of each step (on its
  two batches; the last two empty for LUR's look-ahead steps, which skip the forget
  gradient at the params: see ``OptimSpec.forget_grads_at_params``). The other arguments are
  as in :func:`fit`.
  """
  if _spec(optim).forget_weight is None:
    raise ValueError('fit_joint needs OptimSpec.forget_weight to combine the gradients')
  _length(epochs, steps, [forget, retain])
  m = parallel.size
  total = epochs * num_batches(len(retain), batch_size, m) if steps is None else steps
  optim, state = _start(variables, optim, total, mask, parallel, fisher)
  step = compiled_forget_retain_step(forget.objective, retain.objective, optim, parallel)
  base_key = _base_key(seed, parallel)
  if not cycle_forget and steps is not None:
    raise ValueError('cycle_forget=False pairs the forget set with epochs: give epochs')
  forget_iter = _cycle(len(forget), batch_size, seed, 1, parallel)

  def forget_batches(epoch):
    if cycle_forget:  # not `yield from`: closing this generator would close the cycle
      while True:
        yield next(forget_iter)
    for idx, w in _epoch(len(forget), batch_size, seed, 1, epoch, parallel):
      last = idx
      yield idx, w
    while True:  # the forget pass is over: weight-0 batches (no forget gradient)
      yield last, np.zeros_like(w)

  def plan():
    for epoch in (range(epochs) if steps is None else itertools.count()):
      paired = forget_batches(epoch)
      for idx, w in _epoch(len(retain), batch_size, seed, 0, epoch, parallel):
        f = next(paired)
        yield (lambda st, f=f, r=(idx, w): step(st, forget.batch(*f), retain.batch(*r),
                                                base_key)), \
            {'loss': 'retain', 'forget_loss': 'forget', 'grad_cosine': 'grad_cosine'}

  state, history = run_updates(state, itertools.islice(plan(), total), total,
                               parallel=parallel, control=control, callback=callback,
                               callback_every=callback_every, desc=desc, progress=progress,
                               history=['retain', 'forget', 'grad_cosine'])
  return _final_variables(state, optim, parallel), history


def fast_slow_updates(iterations: int, every: int) -> int:
  """Optimizer updates of :func:`fit_fast_slow`: a retain step per iteration and a forget
  step every ``every``-th (the first included)."""
  return iterations + -(-iterations // every)


def fit_fast_slow(variables, forget: Phase, retain: Phase, *, iterations: int,
                  optim: OptimSpec, batch_size: int, seed, desc: str = 'fast-slow',
                  progress: bool = True, mask=None, callback=None, callback_every: int = 0,
                  parallel: Parallel = SINGLE, control: LoopControl | None = None):
  """SFR-on's fast-slow loop: ``iterations`` iterations, each a retain descent step,
  preceded every ``optim.every``-th iteration by a forget step (Algorithm 1 of arXiv
  2409.19732). Forget and retain batches are drawn from their sets cycled independently.

  Args:
    forget, retain: the two sets and their objectives (the forget loss signed for descent,
      e.g. :class:`jaxunlearn.losses.AdaptiveGradientAscent`).
    iterations: T, one retain step each (the schedules' horizon).
    optim: a spec with ``every > 0``; its two chains are
      :func:`jaxunlearn.optim.fast_slow_pair`.
    mask: the forget-gradient mask (with ``optim.saliency``).
    callback: ``callback(updates, variables)`` after every ``callback_every`` optimizer
      updates (forget and retain steps both count) and at the end.
    control: as in :func:`fit` (its updates, too, count both kinds of step).

  Returns:
    ``(variables, history)``; history holds per-step 'forget' and 'retain' losses and the
    forget steps' 'forget_update_norm'.
  """
  if iterations < 0:
    raise ValueError(f'iterations must be >= 0, got {iterations}')
  optim = _spec(optim, fast_slow=True).over(iterations)
  forget_tx, retain_tx = PairHalf(optim, 0), PairHalf(optim, 1)
  state = _init_masked(variables, forget_tx, mask, parallel)
  forget_step = compiled_forget_step(forget.objective, retain.objective, forget_tx, parallel)
  retain_step = compiled_train_step(retain.objective, retain_tx, parallel)
  forget_iter = _cycle(len(forget), batch_size, seed, 1, parallel)
  retain_iter = _cycle(len(retain), batch_size, seed, 0, parallel)
  base_key = _base_key(seed, parallel)
  every = optim.every
  total = fast_slow_updates(iterations, every)
  with_retain = optim.retain_loss_in_forget_step

  def plan():
    for t in range(iterations):
      r = next(retain_iter)
      if t % every == 0:
        f = next(forget_iter)
        yield (lambda st, f=f, r=r: forget_step(
            st, forget.batch(*f), retain.batch(*r) if with_retain else None, base_key)), \
            {'loss': 'forget', 'update_norm': 'forget_update_norm'}
      yield (lambda st, r=r: retain_step(st, *retain.batch(*r), base_key)), {'loss': 'retain'}

  state, history = run_updates(state, plan(), total, parallel=parallel, control=control,
                               callback=callback, callback_every=callback_every, desc=desc,
                               progress=progress, history=['forget', 'retain',
                                                           'forget_update_norm'])
  return parallel.get(state.variables), history


@dataclasses.dataclass(frozen=True)
class TrainConfig(Hyperparameters):
  """How the original model and Retrain are trained (the same recipe for both): SGD with
  momentum and coupled weight decay, cross-entropy, ``epochs`` passes. Its values are
  checked on construction (as every method's hyperparameters)."""

  method: ClassVar[str] = 'train'  # errors read 'train.lr must be > 0' (--set train.lr=...)
  epochs: int = at_least_one(10, 'passes over the data')
  batch_size: int = at_least_one(128, 'examples per batch')
  lr: float = positive(0.1, 'peak learning rate')
  momentum: float = probability(0.9, 'heavy-ball momentum')
  weight_decay: float = non_negative(5e-4, 'L2 coefficient added to the gradient')
  schedule: str = one_of(('constant', 'cosine', 'step'), 'cosine',
                         "learning-rate schedule ('step': times 0.1 after each drop_epochs)")
  drop_epochs: tuple = hparam((), (lambda v: all(e > 0 for e in v), 'epochs > 0'),
                              "epochs after which the step schedule multiplies the learning "
                              "rate by 0.1 (PyTorch's MultiStepLR milestones)")

  def __post_init__(self):
    super().__post_init__()
    if (self.schedule == 'step') != bool(self.drop_epochs):
      raise ValueError("train.schedule='step' needs train.drop_epochs (e.g. 91,136) and only "
                       f'it takes them; got schedule={self.schedule!r}, drop_epochs='
                       f'{self.drop_epochs!r}')
    if any(e > self.epochs for e in self.drop_epochs):
      raise ValueError(f'train.drop_epochs {self.drop_epochs} lie beyond its {self.epochs} '
                       'epochs')

  def cache_dict(self) -> dict:
    """The values that name a trained model in the cache (``drop_epochs`` only when set,
    so that models cached before it existed keep their keys)."""
    d = self.to_dict()
    if not d['drop_epochs']:
      del d['drop_epochs']
    return d

  def optim(self) -> OptimSpec:
    return OptimSpec(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                     schedule=self.schedule,
                     drop_at=tuple(e / self.epochs for e in self.drop_epochs))


@functools.lru_cache(maxsize=16)
def _compiled_init(model, image_shape: tuple):
  return jit_run_once(lambda key: model.init(key, jnp.zeros((1, *image_shape)), train=False))


def init_variables(model, image_shape, seed: int):
  """Initial flax variables of ``model`` for images of ``image_shape`` (H, W, C).

  One compiled program per (model, shape), reused for every seed: the same values as
  ``model.init`` op by op (bit for bit; ``tests/test_train.py``), which compiles each
  initializer and shape on its own (a ResNet-18's first init took 9.7 s that way, 4.5 s
  compiled as one, 1.7 s as one at -O1: :func:`jit_run_once`).
  """
  return jax.device_get(_compiled_init(model, tuple(int(d) for d in image_shape))(
      jax.random.key(seed)))


def train_classifier(model, x, y, config: TrainConfig, seed: int, desc: str = 'train',
                     progress: bool = True, parallel: Parallel = SINGLE,
                     control: LoopControl | None = None, callback=None,
                     callback_every: int = 0):
  """Trains ``model`` from scratch on (x, y) with cross-entropy; returns flax variables.
  ``control`` (checkpoints, the non-finite guard) and ``callback`` as in :func:`fit`."""
  seeds = ensemble_seeds(seed, parallel)
  if seeds is None:
    variables = init_variables(model, x.shape[1:], seed)
  else:  # one initialisation per model, each the one it would have alone
    variables = jax.tree.map(lambda *a: np.stack(a),
                             *[init_variables(model, x.shape[1:], s) for s in seeds])
  variables, _ = fit(variables, [Phase(x, y, Classifier(model, cross_entropy))],
                     epochs=config.epochs, batch_size=config.batch_size, optim=config.optim(),
                     seed=seed, desc=desc,
                     progress=progress, parallel=parallel, control=control,
                     callback=callback, callback_every=callback_every)
  return variables
