"""Forgetting a class of a class-conditional diffusion model: losses, steps, loops.

The diffusion counterparts of :mod:`jaxunlearn.step` and :mod:`jaxunlearn.train`. The steps
hand the optax chain the same extra arguments as the classification steps
(``forget_grads``, ``forget_grad_fn``, ``forget_loss_fn``, ``retain_loss_fn``), so the same
transforms compose here: ``mask_by_saliency`` (SalUn, SFR-on), ``combine_forget_retain``,
``align_forget_retain`` (LUR), ``hold`` / ``fast_slow_schedule`` (SFR-on) and
``add_elastic_penalty`` (Selective Amnesia). Loops run through
:func:`jaxunlearn.train.run_updates`: resumable, guarded against non-finite steps.

Losses are per example, ``loss(eps_fn, schedule, x0, labels, key) -> [B]``, with
``eps_fn(x_t, t, labels)`` the model; timesteps and noise come from ``key``. Their units
are the reference codes' (OPTML-Group/Unlearn-Saliency and K1nght/Unified-Unlearning-w-
Remain-Geometry, both from the DDIM code base): the denoising loss is the **sum** over
pixels of the squared error, SalUn's remapped-class loss the per-pixel **mean**
(``nn.MSELoss``), so their hyperparameters (clip norm 1, SFR-on's alphas, SA's lambda) mean
what they mean there. Diffusion unlearning runs on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.diffusion.samplers import make_sampler
from jaxunlearn.diffusion.schedules import drop_labels, eps_mse, q_sample
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.losses import reduce_loss
from jaxunlearn.parallel import SINGLE
from jaxunlearn.saliency import fisher_ratio_mask, topk_gradient_mask
from jaxunlearn.step import finish_step, init_state, tree_cosine
from jaxunlearn.train import (FastSlowConfig, LoopControl, Phase, cycle_batches, epoch_batches,
                              joint_combiner, num_batches, run_updates)


# ----------------------------------------------------------------------------- losses


@dataclasses.dataclass(frozen=True)
class Denoising:
  """The DDPM loss per example: ``scale * sum_pixels (eps - eps_theta(x_t, t, c))^2``.

  Attributes:
    scale: multiplies the loss (-1: gradient ascent, GA).
    cond_drop_prob, null_class: classifier-free guidance label dropout (the references
      train and unlearn with 0.1, which keeps the unconditional model trained).
    surrogate: replace the images by uniform noise in [-1, 1] (Selective Amnesia's forget
      term: the forgotten class is remapped to noise; only the batch shape is used).
    reduction: 'sum' over pixels (the references') or 'mean'.
  """

  scale: float = 1.0
  cond_drop_prob: float = 0.0
  null_class: int | None = None
  surrogate: bool = False
  reduction: str = 'sum'

  def __call__(self, eps_fn, schedule, x0, labels, key):
    k_data, k_drop, k_loss = jax.random.split(key, 3)
    if self.surrogate:
      x0 = jax.random.uniform(k_data, x0.shape, x0.dtype, -1.0, 1.0)
    if self.cond_drop_prob > 0 and self.null_class is not None:
      labels = drop_labels(labels, k_drop, self.cond_drop_prob, self.null_class)
    size = math.prod(x0.shape[1:]) if self.reduction == 'sum' else 1
    return self.scale * size * eps_mse(eps_fn, schedule, x0, labels, k_loss)


@dataclasses.dataclass(frozen=True)
class AdaptiveDenoisingAscent:
  """SFR-on's adaptive forget loss on the denoising loss (arXiv 2409.19732, eq. 11).

  Per example ``-l_i`` (``l_i`` the summed denoising loss); :func:`jaxunlearn.losses.reduce_loss`
  weights the examples by ``1 / (l_i^lam + eps)``, normalised over the batch, as the DDPM
  reference's ``adaptive_loss`` (its ``eps`` is 1e-8).
  """

  lam: float = 0.5
  eps: float = 1e-8
  cond_drop_prob: float = 0.0
  null_class: int | None = None

  def __call__(self, eps_fn, schedule, x0, labels, key):
    return -Denoising(1.0, self.cond_drop_prob, self.null_class)(eps_fn, schedule, x0,
                                                                 labels, key)

  def example_weights(self, per_example):
    return 1.0 / (jnp.maximum(-per_example, 0.0) ** self.lam + self.eps)


@dataclasses.dataclass(frozen=True)
class RemappedClass:
  """SalUn's forget loss for diffusion (arXiv 2310.12508, eq. 9): per example
  ``mean_pixels (eps_theta(x_t, t, c) - stop_grad(eps_theta(x_t, t, c')))^2``, ``c' =
  (c + 1) mod num_classes``: the forgotten class is taught to denoise like another one.

  Both predictions are of the current model, in one batched call. (The reference hard-codes
  ``% 10``; ``num_classes`` is the model's.)
  """

  num_classes: int

  def __call__(self, eps_fn, schedule, x0, labels, key):
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.num_timesteps)
    x_t = q_sample(schedule, x0, t, jax.random.normal(k_noise, x0.shape, x0.dtype))
    both = eps_fn(jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
                  jnp.concatenate([labels, (labels + 1) % self.num_classes]))
    pred, target = jnp.split(both, 2)
    return jnp.mean((pred - jax.lax.stop_gradient(target)) ** 2,
                    axis=tuple(range(1, x0.ndim)))


# ----------------------------------------------------------------------------- steps


def _objective(model, schedule, loss, batch, key):
  """``params -> batch loss`` of ``loss`` on ``batch = (x, y, w)``."""
  x, y, w = batch

  def objective(params):
    eps_fn = lambda xt, t, c: model.apply({'params': params}, xt, t, c)
    return reduce_loss(loss, loss(eps_fn, schedule, x, y, key), w)
  return objective


def loss_step(state, batch, base_key, *, model, schedule, loss, tx, retain_batch=None,
              retain_loss=None):
  """One optimizer step on one loss (GA; SFR-on's forget and retain steps).

  With ``retain_batch`` the chain also gets ``retain_loss_fn`` (remain-geometry transforms).
  Returns ``(state, {'loss', 'update_norm', 'skipped', 'nonfinite'})``.
  """
  key, retain_key = jax.random.split(jax.random.fold_in(base_key, state.step))
  value, grads = jax.value_and_grad(_objective(model, schedule, loss, batch, key))(state.params)
  extra = {}
  if retain_batch is not None:
    extra['retain_loss_fn'] = _objective(model, schedule, retain_loss, retain_batch,
                                         retain_key)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
  new_state, guard = finish_step(state, updates, opt_state, state.model_state, value)
  return new_state, {'loss': value, 'update_norm': optax.tree.norm(updates), **guard}


def joint_step(state, forget_batch, retain_batch, base_key, *, model, schedule, forget_loss,
               retain_loss, tx, forget_grads_at_params: bool = True):
  """One step on a forget and a retain batch: ``updates`` = retain gradient, and the chain
  gets ``forget_grads`` (unless ``forget_grads_at_params`` is false: LUR's virtual-retain
  look-ahead only evaluates the forget loss through ``forget_grad_fn``) and the closures
  ``forget_grad_fn``, ``forget_loss_fn``, ``retain_loss_fn``, as the classification
  :func:`jaxunlearn.step.forget_retain_step`.

  Returns ``(state, {'loss': retain loss, 'forget_loss', 'grad_cosine', 'skipped',
  'nonfinite'})`` (the forget entries only with ``forget_grads_at_params``).
  """
  fkey, rkey = jax.random.split(jax.random.fold_in(base_key, state.step))
  f_obj = _objective(model, schedule, forget_loss, forget_batch, fkey)
  r_obj = _objective(model, schedule, retain_loss, retain_batch, rkey)
  r_loss, r_grads = jax.value_and_grad(r_obj)(state.params)
  extra, metrics = {}, {}
  if forget_grads_at_params:
    f_loss, f_grads = jax.value_and_grad(f_obj)(state.params)
    extra['forget_grads'] = f_grads
    metrics = {'forget_loss': f_loss, 'grad_cosine': tree_cosine(f_grads, r_grads)}
  updates, opt_state = tx.update(r_grads, state.opt_state, state.params, **extra,
                                 forget_grad_fn=jax.grad(f_obj), forget_loss_fn=f_obj,
                                 retain_loss_fn=r_obj)
  new_state, guard = finish_step(state, updates, opt_state, state.model_state, r_loss)
  return new_state, {'loss': r_loss, **metrics, **guard}


@functools.lru_cache(maxsize=32)
def compiled_loss_step(model, diffusion: DiffusionConfig, loss, tx_factory, retain_loss=None):
  """:func:`loss_step` jit-compiled (state donated), cached per configuration."""
  return jax.jit(functools.partial(loss_step, model=model, schedule=diffusion.noise_schedule(),
                                   loss=loss, tx=tx_factory(), retain_loss=retain_loss),
                 donate_argnums=0)


@functools.lru_cache(maxsize=32)
def compiled_joint_step(model, diffusion: DiffusionConfig, forget_loss, retain_loss,
                        tx_factory):
  """:func:`joint_step` jit-compiled (state donated), cached per configuration."""
  return jax.jit(functools.partial(
      joint_step, model=model, schedule=diffusion.noise_schedule(), forget_loss=forget_loss,
      retain_loss=retain_loss, tx=tx_factory(),
      forget_grads_at_params=getattr(tx_factory, 'uses_forget_grads', True)), donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class AdamConfig:
  """The optax chain of diffusion unlearning steps, as a hashable config::

      chain(combine_forget_retain(forget_weight, retain_weight)   # joint steps
              | align_forget_retain(lookahead_lr, ...)            # LUR (lookahead_lr > 0)
            add_elastic_penalty(elastic),                         # SA (elastic > 0)
            clip_by_global_norm(clip_norm),                       # clip_norm > 0
            [mask_by_saliency(freeze=True, inner=]adam(lr)[)])    # saliency

  Clip before the mask, as the SalUn DDPM reference (``clip_grad_norm_`` then ``grad *=
  mask`` then ``Adam.step``); Adam as PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8).
  """

  lr: float = 1e-4
  clip_norm: float = 1.0
  saliency: bool = False
  forget_weight: float | None = None
  retain_weight: float = 1.0
  elastic: float = 0.0
  lookahead_lr: float = 0.0
  lookahead_order: str = 'first'
  lookahead_virtual: str = 'retain'

  @property
  def uses_forget_grads(self) -> bool:
    return not (self.lookahead_lr > 0 and self.lookahead_virtual == 'retain')

  def __call__(self, axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
    from jaxunlearn import transforms
    opt = optax.adam(self.lr)
    if self.saliency:
      opt = transforms.mask_by_saliency(freeze=True, inner=opt)
    head = joint_combiner(self, axis_name)
    if self.elastic > 0:
      head.append(transforms.add_elastic_penalty(self.elastic))
    if self.clip_norm > 0:
      head.append(optax.clip_by_global_norm(self.clip_norm))
    return optax.chain(*head, opt)


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class GenerationTask:
  """What every diffusion unlearning method receives.

  Attributes:
    model: a class-conditional :class:`jaxunlearn.models.UNet2D` or
      :class:`jaxunlearn.models.DiT` (``num_class_embeds = num_classes + 1``: the last id
      is the null class of classifier-free guidance).
    variables: the original model's flax variables.
    forget_x, forget_y: images in [-1, 1] ``[N, H, W, C]`` of the classes to forget, labels.
    retain_x, retain_y: the remaining training images and labels.
    num_classes: real classes (the null class excluded).
    diffusion: the noise schedule the model was trained with.
    seed, progress, callback, callback_every, control: as
      :class:`jaxunlearn.methods.UnlearnTask`.
  """

  model: Any
  variables: Any
  forget_x: np.ndarray
  forget_y: np.ndarray
  retain_x: np.ndarray
  retain_y: np.ndarray
  num_classes: int
  diffusion: DiffusionConfig = DiffusionConfig()
  seed: int = 0
  progress: bool = True
  callback: Callable | None = None
  callback_every: int = 0
  control: LoopControl | None = None

  def __post_init__(self):
    from jaxunlearn.methods import check_sets
    check_sets(self)
    for what, x in (('forget', self.forget_x), ('retain', self.retain_x)):
      if np.min(x) < -1.001 or np.max(x) > 1.001:
        raise ValueError(f'{what} images span {np.min(x):.3g}..{np.max(x):.3g}; a diffusion '
                         'model takes pixels in [-1, 1] (load_digits(pixels="symmetric"))')
    embeds = getattr(self.model, 'num_class_embeds', None)
    if embeds != self.num_classes + 1:
      raise ValueError(f'forgetting a class needs a class-conditional model with '
                       f'{self.num_classes + 1} class embeddings ({self.num_classes} classes and '
                       f'the null class), got num_class_embeds={embeds}')

  @property
  def null_class(self) -> int:
    return self.num_classes

  def validate(self) -> None:
    """Checks that cost a pass over the data (no forget image in the retain set) and that
    the model takes the images with these variables."""
    from jaxunlearn.methods import shared_examples
    overlap = shared_examples(self.forget_x, self.retain_x)
    if overlap:
      raise ValueError(f'{len(overlap)} forget images also appear in the retain set (forget '
                       f'row {overlap[0][0]} = retain row {overlap[0][1]}, ...); remove them')
    try:
      out = jax.eval_shape(
          lambda v, x: self.model.apply(v, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)),
          self.variables, jax.ShapeDtypeStruct((1, *self.forget_x.shape[1:]), np.float32))
    except Exception as e:  # flax raises many types for a mismatched input
      raise ValueError(f'the model does not take images of shape {self.forget_x.shape[1:]} '
                       f'with these variables ({type(e).__name__}: {str(e)[:200]})') from e
    if out.shape[1:] != self.forget_x.shape[1:]:
      raise ValueError(f'the model predicts noise of shape {out.shape[1:]} for images of '
                       f'shape {self.forget_x.shape[1:]}')

  def forget_phase(self, loss) -> Phase:
    return Phase(self.forget_x, self.forget_y, loss, 'forget')

  def retain_phase(self, loss) -> Phase:
    return Phase(self.retain_x, self.retain_y, loss, 'retain')


def _start(task: GenerationTask, tx_factory, mask=None, fisher=None):
  from jaxunlearn.transforms import set_elastic_fisher, set_saliency_mask
  state = init_state(jax.device_get(task.variables), tx_factory())  # a copy: steps donate it
  if mask is not None:
    state = state._replace(opt_state=set_saliency_mask(state.opt_state, mask))
  if fisher is not None:
    state = state._replace(opt_state=set_elastic_fisher(state.opt_state, fisher))
  return state


def _run(task: GenerationTask, state, plan, total: int, desc: str, history):
  state, history = run_updates(state, plan, total, parallel=SINGLE, control=task.control,
                               callback=task.callback, callback_every=task.callback_every,
                               desc=desc, progress=task.progress, history=history)
  return jax.device_get(state.variables), history


# ----------------------------------------------------------------------------- loops


def fit_joint(task: GenerationTask, forget: Phase, retain: Phase, *, optim: AdamConfig,
              steps: int, batch_size: int, desc: str, mask=None, fisher=None):
  """``steps`` joint steps, each on the next batch of both sets (each cycled, reshuffled
  every pass). Returns ``(variables, history)`` with per-step 'retain' and 'forget' losses
  and 'grad_cosine'."""
  if optim.forget_weight is None:
    raise ValueError('fit_joint needs AdamConfig.forget_weight to combine the gradients')
  state = _start(task, optim, mask, fisher)
  step = compiled_joint_step(task.model, task.diffusion, forget.loss_fn, retain.loss_fn, optim)
  forget_iter = cycle_batches(len(forget), batch_size, task.seed * 1000 + 1)
  retain_iter = cycle_batches(len(retain), batch_size, task.seed * 1000)
  key = jax.random.key(task.seed)

  def plan():
    for _ in range(steps):
      f, r = next(forget_iter), next(retain_iter)
      yield (lambda st, f=f, r=r: step(st, forget.batch(*f), retain.batch(*r), key)), \
          {'loss': 'retain', 'forget_loss': 'forget', 'grad_cosine': 'grad_cosine'}

  return _run(task, state, plan(), steps, desc, ['retain', 'forget', 'grad_cosine'])


def fit_single(task: GenerationTask, phase: Phase, *, optim: AdamConfig, steps: int,
               batch_size: int, desc: str):
  """``steps`` steps on one set's loss (e.g. GA on the forget set)."""
  state = _start(task, optim)
  step = compiled_loss_step(task.model, task.diffusion, phase.loss_fn, optim)
  batches = cycle_batches(len(phase), batch_size, task.seed * 1000 + 1)
  key = jax.random.key(task.seed)

  def plan():
    for _ in range(steps):
      b = next(batches)
      yield (lambda st, b=b: step(st, phase.batch(*b), key)), {'loss': phase.name}

  return _run(task, state, plan(), steps, desc, [phase.name])


def fit_fast_slow(task: GenerationTask, forget: Phase, retain: Phase, *,
                  config: FastSlowConfig, batch_size: int, desc: str, mask=None):
  """SFR-on's fast-slow loop on a diffusion model: ``config.iterations`` iterations, a
  forget step every ``config.every``-th, a retain step every one, one optimizer state
  (see :func:`jaxunlearn.train.fit_fast_slow`). Returns ``(variables, history)``."""
  forget_cfg = dataclasses.replace(config, role='forget')
  retain_cfg = dataclasses.replace(config, role='retain')
  state = _start(task, forget_cfg, mask)
  # With a remain-Hessian preconditioner the forget step also sees the retain batch.
  geometry = config.precondition != 'none'
  forget_step = compiled_loss_step(task.model, task.diffusion, forget.loss_fn, forget_cfg,
                                   retain.loss_fn if geometry else None)
  retain_step = compiled_loss_step(task.model, task.diffusion, retain.loss_fn, retain_cfg)
  forget_iter = cycle_batches(len(forget), batch_size, task.seed * 1000 + 1)
  retain_iter = cycle_batches(len(retain), batch_size, task.seed * 1000)
  key = jax.random.key(task.seed)
  total = config.iterations + -(-config.iterations // config.every)

  def plan():
    for t in range(config.iterations):
      r = next(retain_iter)
      if t % config.every == 0:
        f = next(forget_iter)
        extra = {'retain_batch': retain.batch(*r)} if geometry else {}
        yield (lambda st, f=f, extra=extra: forget_step(st, forget.batch(*f), key, **extra)), \
            {'loss': 'forget', 'update_norm': 'forget_update_norm'}
      yield (lambda st, r=r: retain_step(st, retain.batch(*r), key)), {'loss': 'retain'}

  return _run(task, state, plan(), total, desc, ['forget', 'retain', 'forget_update_norm'])


# ----------------------------------------------------------------------------- statistics


@functools.lru_cache(maxsize=16)
def _batch_grad(model, diffusion: DiffusionConfig, loss, clip_norm: float):
  schedule = diffusion.noise_schedule()

  def grad(params, batch, key):
    g = jax.grad(_objective(model, schedule, loss, batch, key))(params)
    if clip_norm > 0:
      g = optax.clip_by_global_norm(clip_norm).update(g, optax.EmptyState())[0]
    return g
  return jax.jit(grad)


def accumulate_gradients(task: GenerationTask, x, y, loss, batch_size: int = 128,
                         clip_norm: float = 1.0, square: bool = False, seed: int = 0):
  """Sum over batches (index order) of the batch gradient of ``loss`` at the original
  model, each clipped to global norm ``clip_norm`` first (both DDPM references call
  ``clip_grad_norm_`` before reading the gradient); with ``square`` the sum of their
  squares. Timesteps and noise are drawn from ``seed``."""
  fn = _batch_grad(task.model, task.diffusion, loss, clip_norm)
  params, key, total = task.variables['params'], jax.random.key(seed), None
  for i, (idx, w) in enumerate(epoch_batches(len(y), batch_size, 0, 0, shuffle=False)):
    g = fn(params, (x[idx], y[idx], w), jax.random.fold_in(key, i))
    if square:
      g = jax.tree.map(jnp.square, g)
    total = g if total is None else jax.tree.map(jnp.add, total, g)
  return total


def salun_mask(task: GenerationTask, keep: float = 0.5, batch_size: int = 128):
  """SalUn's diffusion mask: top ``keep`` of ``|sum_batches clip(grad L_diff(D_f))|``
  (the conditional denoising loss of the forget images; DESIGN.md 4.1.3)."""
  g = accumulate_gradients(task, task.forget_x, task.forget_y, Denoising(), batch_size)
  return topk_gradient_mask(g, keep)


def sfron_mask(task: GenerationTask, gamma: float = 1.0, batch_size: int = 128):
  """SFR-on's Fisher-ratio mask ``F_f / F_r >= gamma`` with the diagonal Fishers of the
  denoising loss: the mean over batches of the squared clipped batch gradient, as the DDPM
  reference's ``generate_fisher``."""
  def fisher(x, y):
    total = accumulate_gradients(task, x, y, Denoising(), batch_size, square=True)
    return jax.tree.map(lambda f: f / num_batches(len(y), batch_size), total)
  return fisher_ratio_mask(fisher(task.forget_x, task.forget_y),
                           fisher(task.retain_x, task.retain_y), gamma)


@functools.lru_cache(maxsize=8)
def _example_fisher(model, diffusion: DiffusionConfig, timesteps: int):
  schedule = diffusion.noise_schedule()
  T = schedule.num_timesteps

  def one(params, x, y, key):
    # Stratified timesteps: (T / n) sum_j l_{t_j} estimates the ELBO's sum over all T.
    k_t, k_n = jax.random.split(key)
    t = (jnp.arange(timesteps) * T // timesteps
         + jax.random.randint(k_t, (timesteps,), 0, max(T // timesteps, 1)))
    xs, ys = jnp.repeat(x[None], timesteps, 0), jnp.repeat(y[None], timesteps, 0)
    noise = jax.random.normal(k_n, xs.shape)

    def elbo(p):
      eps_fn = lambda xt, tt, c: model.apply({'params': p}, xt, tt, c)
      pred = eps_fn(q_sample(schedule, xs, t, noise), t, ys)
      return T / timesteps * jnp.sum((pred - noise) ** 2)
    return jax.tree.map(jnp.square, jax.grad(elbo)(params))

  return jax.jit(lambda p, x, y, keys: jax.tree.map(
      lambda f: jnp.sum(f, 0), jax.vmap(one, (None, 0, 0, 0))(p, x, y, keys)))


def elbo_fisher(task: GenerationTask, x, y, timesteps: int = 20, batch_size: int = 8,
                seed: int = 0):
  """Diagonal Fisher of the original model for Selective Amnesia's EWC: the mean over
  images of the squared per-image gradient of the denoising ELBO, ``sum_t l_t`` over all T
  timesteps (the SA reference sums all 1000 per image); we estimate that sum from
  ``timesteps`` stratified ones, scaled by ``T / timesteps``."""
  fn = _example_fisher(task.model, task.diffusion, timesteps)
  params, key, total = task.variables['params'], jax.random.key(seed), None
  for i, (idx, w) in enumerate(epoch_batches(len(y), batch_size, 0, 0, shuffle=False)):
    keys = jax.random.split(jax.random.fold_in(key, i), len(idx))
    idx = idx[w > 0]
    f = fn(params, jnp.asarray(x[idx]), jnp.asarray(y[idx]), keys[:len(idx)])
    total = f if total is None else jax.tree.map(jnp.add, total, f)
  return jax.tree.map(lambda f: f / len(y), total)


@functools.lru_cache(maxsize=16)
def _sampler(model, diffusion: DiffusionConfig, shape, num_steps: int, guidance: float,
             null_class: int):
  return make_sampler(model, diffusion.noise_schedule(), shape, num_steps=num_steps,
                      guidance_scale=guidance, null_class=null_class)


def generate(model, variables, diffusion: DiffusionConfig, labels, image_shape, seed: int = 0,
             *, num_steps: int = 50, guidance: float = 2.0, batch_size: int = 100):
  """Images of ``labels`` from DDIM (``num_steps``, classifier-free guidance ``guidance``
  in diffusers' convention), in fixed-size compiled batches (the last padded); numpy
  ``[N, *image_shape]`` in [-1, 1]."""
  labels = np.asarray(labels, np.int32)
  size = min(batch_size, len(labels))
  sampler = _sampler(model, diffusion, (size, *image_shape), num_steps, guidance,
                     model.num_class_embeds - 1)
  out, key = [], jax.random.key(seed)
  for i, start in enumerate(range(0, len(labels), size)):
    chunk = labels[start:start + size]
    padded = np.concatenate([chunk, np.zeros(size - len(chunk), np.int32)])
    out.append(np.asarray(sampler(variables, jax.random.fold_in(key, i), padded))[:len(chunk)])
  return np.concatenate(out)
