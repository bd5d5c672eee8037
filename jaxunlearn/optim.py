"""The optimizer of every loop, as one frozen spec: :class:`OptimSpec`, and its builders.

One spec describes the optax chain of any loop of the library (the original model,
Retrain, DDPM training, every unlearning method of both tasks); two functions build it:

* :func:`make_tx` ``(spec, axis_name)``: the chain of a loop of single steps (a train step
  on one objective, or a joint forget+retain step)::

      chain(combine_forget_retain(forget_weight, retain_weight)  # joint steps (forget_weight)
                                   # align_forget_retain(...) instead if lookahead_lr > 0 (LUR)
            add_elastic_penalty(elastic)                          # if elastic > 0 (SA)
            clip_by_global_norm(clip_norm)                        # if clip_norm > 0
            add_l1_penalty(l1 -> 0 over l1_decay_steps)           # if l1 > 0 (l1-sparse)
            [mask_by_saliency(freeze=True, inner=]                # if saliency (SalUn)
                chain(add_decayed_weights(weight_decay),
                      sgd(lr_t, momentum) | adam(lr_t, b1=momentum)))[)])

  wrapped whole in ``track_params_ema(..., ema_decay)`` if ``ema_decay > 0`` (DDPM
  training: the loop then returns the average of the params, not the last ones).

  With a constant or cosine schedule and no warm-up (:attr:`OptimSpec.numbers_in_state`)
  the last part is built under ``optax.inject_hyperparams``: the learning rate and the
  cosine's horizon are arrays of the optimizer state, and one compiled step serves every
  value of them (:meth:`OptimSpec.program` keys the compiled steps); a constant rate is the
  cosine over an infinite horizon, the same rate bit for bit, so it shares that step.

* :func:`fast_slow_pair` ``(spec, axis_name)``: SFR-on's two chains over one optimizer
  state (``every > 0``; see :mod:`jaxunlearn.transforms.fast_slow`)::

      forget: chain(scale_by_schedule(forget_weight_t),           # per iteration t
                    [precondition_by_remain_hessian(...), scale(damping)]  # precondition
                    mask_by_saliency(),                           # if saliency
                    clip_by_global_norm(forget_clip_norm),        # if forget_clip_norm > 0
                    shared)
      retain: chain(hold(<the forget preprocessing>), shared)
      shared: chain(clip_by_global_norm(clip_norm),               # if clip_norm > 0
                    add_decayed_weights(weight_decay),
                    sgd(lr_t, momentum) | adam(lr_t, b1=momentum))   # lr_t per iteration t

So one name means one thing in both: ``clip_norm`` clips what the base optimizer receives,
``saliency`` installs the saliency mask (it freezes the masked weights in a single chain,
as SalUn; it masks the forget step's update in a pair, as SFR-on), ``forget_weight`` is
the forget gradient's weight. What a step must compute follows from the spec:
:attr:`OptimSpec.forget_grads_at_params` (LUR's virtual-retain look-ahead does not use the
forget gradient at the params) and :attr:`OptimSpec.retain_loss_in_forget_step` (the
preconditioner needs the remain loss).

A spec is hashable: it keys the caches of compiled steps (:mod:`jaxunlearn.step`), and
calling it, ``spec(axis_name)``, is :func:`make_tx`. Loops fill in ``total_steps``, the
horizon of the schedules (steps; a fast-slow pair's: iterations).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

_CHOICES = {'optimizer': ('sgd', 'adam'), 'schedule': ('constant', 'cosine', 'step'),
            'forget_schedule': ('constant', 'cosine'), 'precondition': ('none', 'cg', 'neumann'),
            'lookahead_order': ('first', 'second'),
            'lookahead_virtual': ('retain', 'forget')}


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """The optimizer of a loop (see the module docstring for the chains it builds).

  Base optimizer:
    optimizer: 'sgd' (momentum, coupled L2 weight decay, as PyTorch's ``SGD``) or 'adam'
      (PyTorch's defaults, ``momentum`` its b1).
    lr: peak learning rate.
    momentum: heavy-ball momentum (0: plain SGD), or Adam's b1.
    weight_decay: L2 coefficient added to the gradient before the optimizer.
    schedule: 'constant', 'cosine' (decay to 0 over ``total_steps``) or 'step' (times 0.1
      at each of ``drop_at``, PyTorch's ``MultiStepLR(gamma=0.1)``).
    drop_at: the step schedule's drops, as fractions of ``total_steps`` (epoch e of E is
      e / E: the drop lands on the first step of epoch e).
    warmup: steps of linear warm-up from 0 before the schedule (DDPM training); 0: none.
    total_steps: the horizon of the schedules; loops set it (steps; a pair: iterations).
    clip_norm: global-norm clip of the gradient the optimizer receives (0: none).
    saliency: install the saliency mask (``set_saliency_mask`` after init).
    ascent: ascend the objective: the loop descends ``-objective`` (GA on cross-entropy),
      bit for bit. With :attr:`numbers_in_state` the sign is a number of the optimizer
      state like the learning rate (:func:`gradient_sign`), which the library's training
      step (:func:`jaxunlearn.step.train_step`) multiplies its loss by, so GA's step is the
      plain step's compiled program (a loop of your own reads it the same way); otherwise
      the chain negates the gradient itself. Single chains without penalties only.

  The forget gradient (joint steps and fast-slow pairs):
    forget_weight: its weight; None: a single-objective chain.
    retain_weight: the retain gradient's weight in joint steps.
    forget_schedule: 'constant' or 'cosine' (decayed over the iterations; pairs only).
    forget_clip_norm: global-norm clip of the forget update (pairs only; 0: none).
    lookahead_lr, lookahead_order, lookahead_virtual: LUR's look-ahead (joint steps,
      ``lookahead_lr > 0``): ``align_forget_retain`` replaces ``combine_forget_retain``.
    project_every: > 0 (joint steps): ``project_onto_forget_memory`` after the combination,
      its memory refreshed every this many steps (ScissorHands: once per epoch), on the
      params under the top-level modules ``project_prefixes`` (empty: all).
    precondition: 'none', 'cg' or 'neumann': the forget step of a pair filtered by
      ``damping (H_r + damping I)^-1`` (``sfron_hvp``); with ``damping``, ``solver_iters``,
      ``neumann_scale`` and ``recompute`` of ``precondition_by_remain_hessian``.

  Penalties (single chains):
    l1: l1-sparse's penalty strength, decayed linearly to 0 over ``l1_decay_steps`` (0: held
      constant, as GA_l1's).
    elastic: Selective Amnesia's EWC strength (its Fisher installed by ``set_elastic_fisher``).

  Averaging:
    ema_decay: > 0 (single chains): the chain keeps an exponential moving average of the
      params (:func:`jaxunlearn.transforms.track_params_ema`), and :func:`jaxunlearn.train.fit`
      returns it instead of the last params (a diffusion model's sampling weights); 0: none.

  Fast-slow:
    every: K > 0 makes the spec a pair (:func:`fast_slow_pair`): a forget step every K-th
      iteration, a retain step every iteration; 0: a single chain (:func:`make_tx`).
  """

  optimizer: str = 'sgd'
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = 'constant'
  drop_at: tuple = ()
  warmup: int = 0
  total_steps: int = 1
  clip_norm: float = 0.0
  saliency: bool = False
  forget_weight: float | None = None
  retain_weight: float = 1.0
  forget_schedule: str = 'constant'
  forget_clip_norm: float = 0.0
  lookahead_lr: float = 0.0
  lookahead_order: str = 'first'
  lookahead_virtual: str = 'retain'
  project_every: int = 0
  project_prefixes: tuple = ()
  precondition: str = 'none'
  damping: float = 1.0
  solver_iters: int = 5
  neumann_scale: float = 1.0
  recompute: bool = False
  l1: float = 0.0
  l1_decay_steps: int = 1
  elastic: float = 0.0
  every: int = 0
  ascent: bool = False
  ema_decay: float = 0.0

  def __post_init__(self):
    for name, allowed in _CHOICES.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f'OptimSpec.{name} must be one of {allowed}, got '
                         f'{getattr(self, name)!r}')
    if not self.lr > 0:
      raise ValueError(f'OptimSpec.lr (the learning rate) must be > 0, got {self.lr}')
    if (self.schedule == 'step') != bool(self.drop_at) or \
        not all(0 < f <= 1 for f in self.drop_at):
      raise ValueError("OptimSpec: schedule='step' needs drop_at (fractions in (0, 1] of the "
                       f"run) and only it takes them; got schedule={self.schedule!r}, "
                       f'drop_at={self.drop_at!r}')
    for name in ('weight_decay', 'clip_norm', 'forget_clip_norm', 'lookahead_lr', 'l1',
                 'elastic', 'warmup', 'every', 'project_every'):
      if getattr(self, name) < 0:
        raise ValueError(f'OptimSpec.{name} must be >= 0, got {getattr(self, name)}')
    if not 0 <= self.ema_decay < 1:
      raise ValueError(f'OptimSpec.ema_decay must lie in [0, 1) (0: no average), got '
                       f'{self.ema_decay}')
    if self.every:
      if self.forget_weight is None:
        raise ValueError('a fast-slow spec (every > 0) needs forget_weight, the weight of '
                         'its forget steps')
      used = [n for n in ('lookahead_lr', 'l1', 'elastic', 'warmup', 'ema_decay')
              if getattr(self, n)]
      if used:
        raise ValueError(f'{", ".join(used)} are not part of a fast-slow pair (every > 0): '
                         'set them to 0 or use a single chain (every=0)')
    else:
      used = [n for n, off in (('forget_schedule', 'constant'), ('forget_clip_norm', 0.0),
                               ('precondition', 'none')) if getattr(self, n) != off]
      if used:
        raise ValueError(f'{", ".join(used)} belong to a fast-slow pair: set every > 0 '
                         '(a forget step every `every` iterations) or leave them unset')
    if self.project_every and (self.forget_weight is None or self.every):
      raise ValueError('the forget-memory projection (project_every > 0) acts on joint steps: '
                       'it needs forget_weight and every=0')
    if self.ascent and (self.every or self.forget_weight is not None or self.l1
                        or self.elastic):
      raise ValueError('ascent flips the sign of one objective\'s gradient: it is for single '
                       'chains without penalties (no forget_weight, every, l1 or elastic, '
                       'whose terms it would flip too); put the sign in the loss instead')
    if self.lookahead_lr > 0 and self.forget_weight is None:
      raise ValueError('the look-ahead (lookahead_lr > 0) combines forget and retain '
                       'gradients: it needs forget_weight')

  @property
  def fast_slow(self) -> bool:
    """Whether the spec is a fast-slow pair (:func:`fast_slow_pair`)."""
    return self.every > 0

  @property
  def joint(self) -> bool:
    """Whether its single chain combines a forget and a retain gradient (joint steps)."""
    return self.forget_weight is not None and not self.fast_slow

  @property
  def forget_grads_at_params(self) -> bool:
    """Whether joint steps must compute the forget gradient at the current params: LUR's
    look-ahead with a virtual retain step evaluates the forget loss only at the shifted
    params (through ``forget_grad_fn``)."""
    return not (self.lookahead_lr > 0 and self.lookahead_virtual == 'retain')

  @property
  def retain_loss_in_forget_step(self) -> bool:
    """Whether a pair's forget step needs the remain loss (the preconditioner's HVPs)."""
    return self.fast_slow and self.precondition != 'none'

  @property
  def numbers_in_state(self) -> bool:
    """Whether the learning rate and the schedule's horizon are numbers of the optimizer
    state (``optax.inject_hyperparams``) rather than constants of the compiled step: single
    chains with a constant or cosine schedule and no warm-up. One compiled step then serves
    every learning rate and horizon (:meth:`program`), and constant and cosine schedules
    alike: a constant rate is the cosine over an infinite horizon (``cos(count * pi / inf)``
    is ``cos(0) = 1`` exactly, so the rate is ``(1 + 1) * (0.5 * lr) = lr`` bit for bit), so
    the original, Retrain, FT and RL's retain pass share one compiled step."""
    return not self.fast_slow and self.schedule in ('constant', 'cosine') and not self.warmup

  def program(self) -> OptimSpec:
    """The spec that keys compiled steps (:mod:`jaxunlearn.step`): with
    :attr:`numbers_in_state`, this spec with ``lr`` and ``total_steps`` set to 1, so that
    loops that differ only in them (the original model and Retrain; FT and RL's retain
    pass) run one program; otherwise the spec itself. A step built from it reads the
    numbers from the state that ``init_state(variables, spec())`` made."""
    if not self.numbers_in_state:
      return self
    # a constant rate runs as a cosine over an infinite horizon (make_tx): one program
    return dataclasses.replace(self, lr=1.0, total_steps=1, schedule='cosine', ascent=False)

  def over(self, total_steps: int) -> OptimSpec:
    """The spec with its schedules spanning ``total_steps`` (what loops call)."""
    return dataclasses.replace(self, total_steps=max(int(total_steps), 1))

  def learning_rate(self):
    """The learning rate per step of a single chain: a float, or an optax schedule."""
    if self.schedule == 'cosine':
      main = optax.cosine_decay_schedule(self.lr, max(self.total_steps - self.warmup, 1))
    elif self.schedule == 'step':
      drops: dict = {}
      for f in self.drop_at:
        step = int(round(f * (self.total_steps - self.warmup)))
        drops[step] = drops.get(step, 1.0) * 0.1
      main = optax.piecewise_constant_schedule(self.lr, drops)
    else:
      main = self.lr
    if not self.warmup:
      return main
    ramp = optax.linear_schedule(0.0, self.lr, self.warmup)
    rest = main if callable(main) else optax.constant_schedule(main)
    return optax.join_schedules([ramp, rest], [self.warmup])

  def __call__(self, axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
    """:func:`make_tx` (a spec is the hashable factory compiled steps are keyed by)."""
    return make_tx(self, axis_name)


def _optimizer(spec: OptimSpec, lr) -> optax.GradientTransformation:
  return _base_optimizer(lr, optimizer=spec.optimizer, momentum=spec.momentum,
                         weight_decay=spec.weight_decay, sign=-1.0 if spec.ascent else None)


def _base_optimizer(learning_rate, *, optimizer, momentum, weight_decay, sign=None):
  """Weight decay and the optimizer; ``sign`` (a number, possibly traced) multiplies the
  gradient first (:attr:`OptimSpec.ascent`)."""
  opt = (optax.adam(learning_rate, b1=momentum) if optimizer == 'adam' else
         optax.sgd(learning_rate, momentum=momentum or None))
  flip = [] if sign is None else [optax.scale(sign)]
  return optax.chain(*flip, optax.add_decayed_weights(weight_decay), opt)


def _cosine_decay(peak, horizon):
  """``optax.cosine_decay_schedule(peak, horizon)`` (alpha 0, exponent 1) with ``peak`` and
  ``horizon`` possibly traced: the same operations in the same order, so the same float32
  values bit for bit (``tests/test_optim.py``)."""
  def schedule(count):
    count = jnp.minimum(count, horizon)
    return (jnp.cos(count * (jnp.float32(jnp.pi) * (1 / horizon))) + 1) * (0.5 * peak)
  return schedule


def _base_with_numbers(learning_rate, horizon, gradient_sign, *, schedule, optimizer, momentum,
                       weight_decay):
  """The base optimizer of a :attr:`OptimSpec.numbers_in_state` spec, a factory for
  ``optax.inject_hyperparams``: ``learning_rate``, ``horizon`` (a float, as optax's
  schedule makes it) and ``gradient_sign`` (1, or -1 to ascend: exact either way) arrive
  as state arrays, the rest are static."""
  del gradient_sign  # read by the step, which flips the loss (gradient_sign below)
  lr = _cosine_decay(learning_rate, horizon) if schedule == 'cosine' else learning_rate
  return _base_optimizer(lr, optimizer=optimizer, momentum=momentum,
                         weight_decay=weight_decay)


INJECTED_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
"""The state classes of ``optax.inject_hyperparams`` (stateless and stateful schedules):
where a :attr:`OptimSpec.numbers_in_state` chain keeps its numbers."""


def injected_states(opt_state) -> list:
  """The :data:`INJECTED_STATES` inside an optimizer state, outermost first."""
  is_injected = lambda x: isinstance(x, INJECTED_STATES)  # noqa: E731
  return [s for s in jax.tree.leaves(opt_state, is_leaf=is_injected) if is_injected(s)]


def gradient_sign(opt_state):
  """The ``gradient_sign`` number of an optimizer state that holds one (a
  :attr:`OptimSpec.numbers_in_state` chain), else ``None``. The training step multiplies
  the loss it differentiates by it: the backward pass then starts from -1 instead of 1, so
  every gradient is exactly negated, and nothing else in the step changes (a sign applied
  to the gradient inside the chain let XLA fuse the weight decay's multiply-add
  differently, and every plain step's float32 rounding moved with it)."""
  found = [s.hyperparams['gradient_sign'] for s in injected_states(opt_state)
           if 'gradient_sign' in s.hyperparams]
  return found[0] if found else None


def make_tx(spec: OptimSpec, axis_name: str | None = None
            ) -> optax.GradientTransformationExtraArgs:
  """The chain of a loop of single steps (module docstring). ``axis_name`` (under ``pmap``)
  goes to the transforms that average what they compute from device-local loss closures
  (LUR's look-ahead)."""
  from jaxunlearn import transforms  # transforms import the library's neighbours, not optim
  if spec.fast_slow:
    raise ValueError('a fast-slow spec (every > 0) builds two chains: use '
                     'fast_slow_pair(spec) (fit_fast_slow does)')
  head = []
  if spec.forget_weight is not None:
    if spec.lookahead_lr > 0:
      head.append(transforms.align_forget_retain(
          spec.lookahead_lr, spec.lookahead_order, spec.lookahead_virtual,
          spec.forget_weight, spec.retain_weight, axis_name=axis_name))
    else:
      head.append(transforms.combine_forget_retain(spec.forget_weight, spec.retain_weight))
    if spec.project_every:
      head.append(transforms.project_onto_forget_memory(spec.project_every,
                                                        spec.project_prefixes or None))
  if spec.elastic > 0:
    head.append(transforms.add_elastic_penalty(spec.elastic))
  if spec.clip_norm > 0:
    head.append(optax.clip_by_global_norm(spec.clip_norm))
  if spec.l1 > 0:
    head.append(transforms.add_l1_penalty(
        optax.linear_schedule(spec.l1, 0.0, spec.l1_decay_steps) if spec.l1_decay_steps
        else spec.l1))
  if spec.numbers_in_state:  # a constant rate: the cosine over an infinite horizon
    horizon = float(max(spec.total_steps, 1)) if spec.schedule == 'cosine' else math.inf
    opt = optax.inject_hyperparams(
        _base_with_numbers, static_args=('schedule', 'optimizer', 'momentum', 'weight_decay'))(
            learning_rate=spec.lr, horizon=horizon, gradient_sign=-1.0 if spec.ascent else 1.0,
            schedule='cosine', optimizer=spec.optimizer,
            momentum=spec.momentum, weight_decay=spec.weight_decay)
  else:
    opt = _optimizer(spec, spec.learning_rate())
  if spec.saliency:
    opt = transforms.mask_by_saliency(freeze=True, inner=opt)
  chain = optax.chain(*head, opt)
  return transforms.track_params_ema(chain, spec.ema_decay) if spec.ema_decay else chain


def fast_slow_pair(spec: OptimSpec, axis_name: str | None = None
                   ) -> tuple[optax.GradientTransformationExtraArgs,
                              optax.GradientTransformationExtraArgs]:
  """SFR-on's ``(forget_tx, retain_tx)`` of a spec with ``every > 0``: one optimizer state
  (either ``init`` gives it), the forget chain's preprocessing held still by the retain
  steps, the learning rate and forget weight per *iteration* (module docstring).

  This is the reference's order (loss scaled by alpha, backward, ``grad *= mask``,
  ``clip_grad_norm``, ``SGD.step`` with coupled weight decay). The preconditioner, scaled
  by ``damping``, is the filter ``damping (H_r + damping I)^-1``: directions of remain
  curvature well below ``damping`` pass unchanged, high-curvature ones are damped, which is
  what ``every`` retain steps do to a forget step implicitly, ``(I - lr H_r)^every``. It
  stands before the mask because the solve mixes coordinates.
  """
  from jaxunlearn import transforms
  if not spec.fast_slow:
    raise ValueError('fast_slow_pair needs a spec with every > 0 (a forget step every '
                     '`every` iterations); a single chain is make_tx(spec)')
  iterations = max(spec.total_steps, 1)

  def per_iteration(value, schedule):
    if schedule == 'cosine':
      return optax.cosine_decay_schedule(value, iterations)
    return optax.constant_schedule(value)

  alpha = per_iteration(spec.forget_weight, spec.forget_schedule)
  parts = [optax.scale_by_schedule(lambda f: alpha(f * spec.every))]
  if spec.precondition != 'none':
    parts += [transforms.precondition_by_remain_hessian(
        spec.damping, spec.solver_iters, spec.precondition, spec.neumann_scale,
        axis_name=axis_name, recompute=spec.recompute), optax.scale(spec.damping)]
  if spec.saliency:
    parts.append(transforms.mask_by_saliency())
  if spec.forget_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(spec.forget_clip_norm))
  pre = optax.chain(*parts)
  lr = transforms.fast_slow_schedule(per_iteration(spec.lr, spec.schedule), spec.every)
  clip = [optax.clip_by_global_norm(spec.clip_norm)] if spec.clip_norm > 0 else []
  shared = optax.chain(*clip, _optimizer(spec, lr))
  return optax.chain(pre, shared), optax.chain(transforms.hold(pre), shared)


@dataclasses.dataclass(frozen=True)
class PairHalf:
  """One chain of a pair as a hashable factory (``which``: 0 forget, 1 retain), the key
  under which :mod:`jaxunlearn.step` caches the pair's compiled steps."""

  spec: OptimSpec
  which: int

  def __call__(self, axis_name: str | None = None):
    return fast_slow_pair(self.spec, axis_name)[self.which]
