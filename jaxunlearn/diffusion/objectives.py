"""Denoising objectives: the diffusion task's plug-in to the shared steps and loops.

:class:`Denoiser` is the objective (see :mod:`jaxunlearn.objectives`) of a class-conditional
noise-prediction model (:class:`jaxunlearn.models.UNet2D`, :class:`jaxunlearn.models.DiT`);
the per-example losses it takes are ``loss(eps_fn, schedule, x0, labels, key) -> [B]``, with
``eps_fn(x_t, t, labels)`` the model; timesteps, noise and label dropout come from ``key``
(through :func:`jaxunlearn.parallel.draw`, so under ``pmap`` they are the global batch's).

Their units are the reference codes' (OPTML-Group/Unlearn-Saliency and K1nght/Unified-
Unlearning-w-Remain-Geometry, both from the DDIM code base): the denoising loss is the
**sum** over pixels of the squared error, SalUn's remapped-class loss the per-pixel **mean**
(``nn.MSELoss``), so their hyperparameters (clip norm 1, SFR-on's alphas, SA's lambda) mean
what they mean there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxunlearn.diffusion.schedules import drop_labels, eps_mse, q_sample, vlb_term
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.parallel import ShardKey, draw, split_key


def has_dropout(model) -> bool:
  """Whether ``model`` has dropout to switch on in training mode (``dropout`` > 0)."""
  return float(getattr(model, 'dropout', 0.0) or 0.0) > 0.0


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """A per-example loss on the noise predictions of ``model``.

  Attributes:
    model: ``model.apply(variables, x_t, t, labels) -> eps`` (UNet2D, DiT).
    diffusion: the noise schedule the model was trained with.
    loss: ``loss(eps_fn, schedule, x0, labels, key) -> [B]`` (below).
    conditional: False for an unconditional model: it is called with labels None (the
      batch's labels are then placeholders).
    train: run the model in training mode, its dropout active (a model with a ``dropout``
      rate > 0; the references train and unlearn their DDPM so, and compute saliency masks
      and Fishers in eval mode). The dropout key is split off ``key``; under ``pmap`` it is
      folded with the device's batch offset, so devices drop differently (the masks then
      depend on the device count, unlike the loss's own draws).

  No metrics; the model state passes through unchanged (no batch statistics).
  """

  model: Any
  diffusion: DiffusionConfig
  loss: Callable
  conditional: bool = True
  train: bool = False

  def __call__(self, params, model_state, x, y, key):
    y = y if self.conditional else None
    variables, options = {'params': params, **model_state}, {}
    if self.train:
      key, k_drop = split_key(key)
      if isinstance(k_drop, ShardKey):
        k_drop = jax.random.fold_in(k_drop.key, k_drop.offset)
      options = {'train': True, 'rngs': {'dropout': k_drop}}
    if getattr(self.loss, 'full_output', False) and _predicts_variance(self.model):
      options['full_output'] = True  # the variance channels too
    eps_fn = lambda xt, t, c: self.model.apply(variables, xt, t, c, **options)
    return self.loss(eps_fn, self.diffusion.noise_schedule(), x, y, key), model_state, {}

  def on_axis(self, axis_name: str) -> Denoiser:
    """Unchanged under ``pmap``: group and layer norms are per example."""
    del axis_name
    return self


def _predicts_variance(model) -> bool:
  """Whether ``model`` (a learned-sigma DiT) also outputs the variance half."""
  from jaxunlearn.models.dit import DiT
  return isinstance(model, DiT) and model.out_channels == 2 * model.in_channels


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
    k_data, k_drop, k_loss = split_key(key, 3)
    if self.surrogate:
      x0 = draw(k_data, lambda k, s: jax.random.uniform(k, s, x0.dtype, -1.0, 1.0), x0.shape)
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
  hybrid: bool = False  # weigh DiT's hybrid loss instead of the summed denoising loss

  @property
  def full_output(self) -> bool:
    return self.hybrid

  def __call__(self, eps_fn, schedule, x0, labels, key):
    base = HybridDenoising if self.hybrid else Denoising
    return -base(1.0, self.cond_drop_prob, self.null_class)(eps_fn, schedule, x0, labels, key)

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
    k_t, k_noise = split_key(key)
    t = draw(k_t, lambda k, s: jax.random.randint(k, s, 0, schedule.num_timesteps),
             (x0.shape[0],))
    noise = draw(k_noise, lambda k, s: jax.random.normal(k, s, x0.dtype), x0.shape)
    x_t = q_sample(schedule, x0, t, noise)
    both = eps_fn(jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
                  jnp.concatenate([labels, (labels + 1) % self.num_classes]))
    pred, target = jnp.split(both, 2)
    return jnp.mean((pred - jax.lax.stop_gradient(target)) ** 2,
                    axis=tuple(range(1, x0.ndim)))


@dataclasses.dataclass(frozen=True)
class HybridDenoising:
  """DiT's training loss per example (improved DDPM's hybrid loss, DiT's
  ``diffusion.training_losses``): ``scale * (mean_pixels (eps - eps_theta)^2 + vb)``, ``vb``
  the variational term (:func:`jaxunlearn.diffusion.schedules.vlb_term`, bits per dim,
  gradient through the variance only) of a model that predicts its variance (a DiT with
  ``out_channels = 2 in_channels``); for one that does not, the mean squared error alone,
  as DiT's code computes it then. Labels dropped to the null class with
  ``cond_drop_prob`` (DiT drops them inside the model in training mode: 0.1).

  SFR-on's DiT code ascends it on the forget set (``scale`` -1) and descends it on the
  rest.
  """

  scale: float = 1.0
  cond_drop_prob: float = 0.0
  null_class: int | None = None
  full_output = True  # the Denoiser hands the variance channels through

  def __call__(self, eps_fn, schedule, x0, labels, key):
    k_drop, k_t, k_noise = split_key(key, 3)
    if self.cond_drop_prob > 0 and self.null_class is not None:
      labels = drop_labels(labels, k_drop, self.cond_drop_prob, self.null_class)
    t = draw(k_t, lambda k, s: jax.random.randint(k, s, 0, schedule.num_timesteps),
             (x0.shape[0],))
    noise = draw(k_noise, lambda k, s: jax.random.normal(k, s, x0.dtype), x0.shape)
    x_t = q_sample(schedule, x0, t, noise)
    out = eps_fn(x_t, t, labels)
    channels = x0.shape[-1]
    eps = out[..., :channels]
    loss = jnp.mean((eps - noise) ** 2, axis=tuple(range(1, x0.ndim)))
    if out.shape[-1] == 2 * channels:
      loss = loss + vlb_term(schedule, x0, x_t, t, jax.lax.stop_gradient(eps),
                             out[..., channels:])
    return self.scale * loss


ESD_ORIGINAL = 'esd_original'  # the model-state collection holding the frozen original


@dataclasses.dataclass(frozen=True)
class ErasedStableDiffusion:
  """ESD's objective (Gandikota et al. 2023, "Erasing Concepts from Diffusion Models"; the
  ``train-esd.py`` of SalUn's ``SD/`` code): the model conditioned on the concept ``c`` is
  regressed onto the frozen original's guidance *away* from it,
  ``eps_0(z, t, ∅) - eta (eps_0(z, t, c) - eps_0(z, t, ∅))``, per-pixel MSE.

  ``z`` is made by the model being trained itself (gradient stopped): DDIM (``ddim_steps``
  steps, Stable Diffusion's spacing, no clipping, ``eta`` 0) from fresh noise toward ``c``
  with guidance ``start_guidance``, stopped at a random step; ``t`` is drawn within that
  step's stretch of the training timesteps. As the reference, one stopping step per batch
  (its batch is one image), and ``z`` is one DDIM step less noisy than ``t`` says: the
  reference's sampler stops after the step *from* index ``t_enc - 1`` while ``t`` is drawn
  from ``[t_enc, t_enc + 1) * T / ddim_steps`` (kept: it is the recipe ESD and SalUn report).

  The batch's images are placeholders (only their shape: the latent's); its labels are the
  concept's condition ids (prompts, or classes). The original's variables ride in the model
  state under :data:`ESD_ORIGINAL`, unchanged by the steps.
  """

  model: Any
  diffusion: DiffusionConfig
  null_class: int
  negative_guidance: float = 1.0
  start_guidance: float = 3.0
  ddim_steps: int = 50

  @property
  def loss(self):
    """What the steps weigh the examples by: nothing, the batch mean."""
    return None

  def __call__(self, params, model_state, x, y, key):
    from jaxunlearn.diffusion.samplers import sample
    schedule = self.diffusion.noise_schedule()
    T, S = schedule.num_timesteps, self.ddim_steps
    original = model_state[ESD_ORIGINAL]
    current = {'params': jax.lax.stop_gradient(params),
               **{k: v for k, v in model_state.items() if k != ESD_ORIGINAL}}
    k_enc, k_code, k_t = split_key(key, 3)
    base = k_enc.key if isinstance(k_enc, ShardKey) else k_enc
    t_enc = jax.random.randint(base, (), 0, S)          # one per batch, on every device
    z = draw(k_code, lambda k, s: jax.random.normal(k, s, x.dtype), x.shape)
    eps_now = lambda xt, t, c: self.model.apply(current, xt, t, c)
    z = jax.lax.stop_gradient(sample(
        eps_now, schedule, x.shape, base, y, num_steps=S, guidance_scale=self.start_guidance,
        null_class=self.null_class, clip=False, x_init=z, steps_offset=1,
        set_alpha_to_one=False, stop_index=jnp.maximum(t_enc - 1, 0)))
    lo = jnp.round(t_enc / S * T).astype(jnp.int32)
    hi = jnp.round((t_enc + 1) / S * T).astype(jnp.int32)
    t = draw(k_t, lambda k, s: jax.random.randint(k, s, lo, hi), (x.shape[0],))
    null = jnp.full_like(y, self.null_class)
    both = self.model.apply(original, jnp.concatenate([z, z]), jnp.concatenate([t, t]),
                            jnp.concatenate([null, y]))
    e0, ep = jnp.split(jax.lax.stop_gradient(both), 2)
    target = e0 - self.negative_guidance * (ep - e0)
    pred = self.model.apply({**current, 'params': params}, z, t, y)
    loss = jnp.mean((pred - target) ** 2, axis=tuple(range(1, x.ndim)))
    return loss, model_state, {}

  def on_axis(self, axis_name: str) -> ErasedStableDiffusion:
    del axis_name
    return self
