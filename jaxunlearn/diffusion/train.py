"""Training a class-conditional DDPM: the eps-MSE step and its loop.

The step is the classification step's counterpart (:mod:`jaxunlearn.step`): a pure
``(state, x0, labels, weights, key) -> (state, metrics)``, timesteps and noise drawn from
``fold_in(key, step)``, labels dropped to the null class with ``cond_drop_prob`` for
classifier-free guidance, non-finite steps skipped (:func:`jaxunlearn.step.finish_step`).
The loop is :func:`jaxunlearn.train.run_updates`, so it resumes from checkpoints like
every other loop.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.diffusion.schedules import (NoiseSchedule, cosine_schedule, drop_labels,
                                            eps_mse, linear_schedule)
from jaxunlearn.losses import weighted_mean
from jaxunlearn.parallel import SINGLE
from jaxunlearn.step import TrainState, finish_step, init_state
from jaxunlearn.train import LoopControl, epoch_batches, run_updates


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  """How a class-conditional DDPM is trained (and what its sampler assumes).

  Attributes:
    steps: optimizer steps.
    batch_size: images per step.
    lr: Adam's learning rate (after a linear warm-up of ``warmup`` steps).
    warmup: warm-up steps.
    clip_norm: global-norm gradient clipping (0: none).
    schedule: 'linear' or 'cosine' noise schedule of ``num_timesteps`` steps.
    num_timesteps: T.
    cond_drop_prob: probability of training a label as the null class (classifier-free
      guidance; the null class is the model's last class id).
  """

  steps: int = 3000
  batch_size: int = 128
  lr: float = 1e-3
  warmup: int = 100
  clip_norm: float = 1.0
  schedule: str = 'linear'
  num_timesteps: int = 1000
  cond_drop_prob: float = 0.1

  def __post_init__(self):
    if self.schedule not in ('linear', 'cosine'):
      raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
    if not 0 <= self.cond_drop_prob < 1:
      raise ValueError(f'cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}')
    if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
      raise ValueError('steps must be >= 0, batch_size >= 1 and lr > 0')

  def noise_schedule(self) -> NoiseSchedule:
    fn = linear_schedule if self.schedule == 'linear' else cosine_schedule
    return fn(self.num_timesteps)

  def __call__(self, axis_name: str | None = None) -> optax.GradientTransformation:
    """The optimizer: clip, then Adam with a linear warm-up."""
    lr = optax.linear_schedule(0.0, self.lr, max(self.warmup, 1))
    parts = [optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm > 0 else []
    return optax.chain(*parts, optax.adam(lr))


def diffusion_step(state: TrainState, x0, labels, weights, base_key, *, model, schedule,
                   tx, cond_drop_prob: float = 0.0, null_class: int | None = None):
  """One Adam step on the weighted eps-MSE of a batch; ``labels`` None = unconditional."""
  key = jax.random.fold_in(base_key, state.step)
  drop_key, noise_key = jax.random.split(key)
  if labels is not None and null_class is not None and cond_drop_prob > 0:
    labels = drop_labels(labels, drop_key, cond_drop_prob, null_class)

  def objective(params):
    eps_fn = lambda x, t, y: model.apply({'params': params}, x, t, y)
    return weighted_mean(eps_mse(eps_fn, schedule, x0, labels, noise_key), weights)

  loss, grads = jax.value_and_grad(objective)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state, guard = finish_step(state, updates, opt_state, state.model_state, loss)
  return new_state, {'loss': loss, **guard}


def compiled_diffusion_step(model, config: DiffusionConfig):
  """:func:`diffusion_step` jit-compiled (state donated), cached per model and the parts
  of ``config`` the step depends on (not its length or batch size)."""
  return _compiled_step(model, dataclasses.replace(config, steps=0, batch_size=1))


@functools.lru_cache(maxsize=16)
def _compiled_step(model, config: DiffusionConfig):
  null = model.num_class_embeds - 1 if model.num_class_embeds is not None else None
  return jax.jit(functools.partial(
      diffusion_step, model=model, schedule=config.noise_schedule(), tx=config(),
      cond_drop_prob=config.cond_drop_prob, null_class=null), donate_argnums=0)


def init_unet(model, image_shape, seed: int = 0):
  """Flax variables of a class-conditional UNet2D or DiT for images of ``image_shape``
  (H, W, C)."""
  labels = None if model.num_class_embeds is None else jnp.zeros((1,), jnp.int32)
  return jax.device_get(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *image_shape)),
                                            jnp.zeros((1,)), labels))


def train_diffusion(model, x, y, config: DiffusionConfig, seed: int = 0, variables=None,
                    desc: str = 'ddpm', progress: bool = True,
                    control: LoopControl | None = None):
  """Trains (or, from ``variables``, fine-tunes) ``model`` on images ``x`` in [-1, 1] with
  labels ``y`` (None: unconditional). Returns ``(variables, history)``."""
  if variables is None:
    variables = init_unet(model, x.shape[1:], seed)
  state = init_state(jax.device_get(variables), config())  # a copy: the steps donate it
  step = compiled_diffusion_step(model, config)
  base_key = jax.random.key(seed)
  batches = itertools.chain.from_iterable(
      epoch_batches(len(x), config.batch_size, seed, epoch) for epoch in itertools.count())

  def plan():
    for idx, w in itertools.islice(batches, config.steps):
      yield (lambda st, idx=idx, w=w: step(st, x[idx], None if y is None else y[idx], w,
                                           base_key)), {'loss': 'loss'}

  state, history = run_updates(state, plan(), config.steps, parallel=SINGLE, control=control,
                               callback=None, callback_every=0, desc=desc, progress=progress,
                               history=['loss'])
  return jax.device_get(state.variables), history
