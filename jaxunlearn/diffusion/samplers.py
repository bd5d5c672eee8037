"""DDPM and DDIM sampling with classifier-free guidance, as one compiled program.

The reverse process runs as a ``lax.scan`` over the timesteps inside one ``jax.jit``, so
sampling costs one dispatch however many steps it takes. Each update is that of diffusers'
``DDPMScheduler`` (``fixed_small`` variance) and ``DDIMScheduler`` (``set_alpha_to_one``)
with epsilon prediction, ``clip_sample`` to [-1, 1] and ``leading`` timestep spacing
(``tests/test_diffusion.py`` checks each step against them).

Guidance follows diffusers' convention: ``eps = eps_null + g (eps_c - eps_null)``;
``g = 1`` is the plain conditional model (no second pass), ``g = 1 + w`` the ``w`` of Ho &
Salimans' paper.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.diffusion.schedules import NoiseSchedule


def timesteps(num_train: int, num_steps: int) -> np.ndarray:
  """Descending ``leading``-spaced timesteps: ``(arange(n) * (T // n))[::-1]``."""
  if not 1 <= num_steps <= num_train:
    raise ValueError(f'num_steps must lie in 1..{num_train} (the training timesteps), '
                     f'got {num_steps}')
  return (np.arange(num_steps) * (num_train // num_steps))[::-1].astype(np.int32)


def guided_eps(eps_fn, x, t, labels, guidance_scale: float, null_class):
  """The model's noise prediction at ``(x, t)``, guided toward ``labels``.

  ``labels`` is the condition, one row per image: class ids, or the text encoder's states
  ``[B, L, D]``; ``null_class`` the unconditional one: the null class id, or the states of
  the empty prompt (``[L, D]`` or ``[1, L, D]``, the same for every image)."""
  t = jnp.broadcast_to(t, (x.shape[0],))
  if labels is None or guidance_scale == 1.0:
    return eps_fn(x, t, labels)
  if null_class is None:
    raise ValueError('classifier-free guidance needs the unconditional condition '
                     '(null_class: the null class id, or the empty prompt\'s states)')
  null = jnp.broadcast_to(jnp.asarray(null_class, labels.dtype), labels.shape)
  both = eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                jnp.concatenate([labels, null]))
  cond, null = jnp.split(both, 2)
  return null + guidance_scale * (cond - null)


def _x0(x, eps, abar, clip):
  x0 = (x - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)
  return jnp.clip(x0, -1.0, 1.0) if clip else x0


def ddpm_step(schedule: NoiseSchedule, x, eps, t, prev_t, noise, clip: bool = True):
  """One ancestral step ``x_t -> x_prev`` (no noise at the last step, ``t = 0``)."""
  abar = schedule.alphas_cumprod[t]
  abar_prev = jnp.where(prev_t >= 0, schedule.alphas_cumprod[jnp.maximum(prev_t, 0)], 1.0)
  alpha = abar / abar_prev
  beta = 1 - alpha
  x0 = _x0(x, eps, abar, clip)
  mean = (jnp.sqrt(abar_prev) * beta * x0 + jnp.sqrt(alpha) * (1 - abar_prev) * x) / (1 - abar)
  variance = jnp.maximum((1 - abar_prev) / (1 - abar) * beta, 1e-20)
  return mean + jnp.where(t > 0, jnp.sqrt(variance), 0.0) * noise


def ddim_step(schedule: NoiseSchedule, x, eps, t, prev_t, noise, eta: float = 0.0,
              clip: bool = True, final_alpha_cumprod=1.0):
  """One DDIM step ``x_t -> x_prev`` (deterministic for ``eta = 0``). Past the first
  timestep ``alpha_bar`` is ``final_alpha_cumprod``: 1 (diffusers' ``set_alpha_to_one``)
  or ``alphas_cumprod[0]`` (Stable Diffusion's scheduler config)."""
  abar = schedule.alphas_cumprod[t]
  abar_prev = jnp.where(prev_t >= 0, schedule.alphas_cumprod[jnp.maximum(prev_t, 0)],
                        final_alpha_cumprod)
  x0 = _x0(x, eps, abar, clip)
  std = eta * jnp.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
  direction = jnp.sqrt(1 - abar_prev - std ** 2) * eps
  return jnp.sqrt(abar_prev) * x0 + direction + std * noise


def _normal(key, shape, index):
  """Standard normal noise of ``shape``: one draw from ``key``, or with ``index`` (``[B]``
  ints) row ``i`` drawn from ``fold_in(key, index[i])``, so that an image's noise does not
  depend on which batch, or which device, it is made in."""
  if index is None:
    return jax.random.normal(key, shape, jnp.float32)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape[1:],
                                              jnp.float32))(index)


def sample(eps_fn, schedule: NoiseSchedule, shape, key, labels=None, *, method: str = 'ddim',
           num_steps: int = 50, eta: float = 0.0, guidance_scale: float = 1.0,
           null_class=None, clip: bool = True, unroll: int | bool = 1,
           x_init=None, index=None, steps_offset: int = 0, set_alpha_to_one: bool = True,
           stop_index=None):
  """Samples ``shape`` images from pure noise with ``num_steps`` reverse steps (traceable:
  call it under ``jax.jit``, or use :func:`make_sampler`).

  Args:
    eps_fn: ``eps_fn(x_t, t [B], labels or None) -> eps``.
    method: 'ddim' (``eta``: 0 deterministic, 1 DDPM-like) or 'ddpm' (ancestral).
    labels: the condition per image (class ids, or text states ``[B, L, D]``).
    guidance_scale, null_class: classifier-free guidance (see the module docstring and
      :func:`guided_eps`).
    unroll: ``lax.scan``'s unroll; XLA:CPU runs convolutions inside a loop body much
      slower than unrolled, so on CPU a full unroll (True) is faster to run, slower to
      compile.
    x_init: the starting noise ``x_T`` (default: drawn from ``key``).
    index: ``[B]`` ints, each image's own number: its starting and per-step noise are
      drawn from ``fold_in(key, index)``, the same in any batch and on any device
      (:func:`jaxunlearn.diffusion.unlearn.generate` numbers the images it makes).
    steps_offset, set_alpha_to_one: diffusers' scheduler options of those names (Stable
      Diffusion's DDIM config: 1 and False; DDPM-style models: 0 and True).
    stop_index: run only the steps of index ``>= stop_index`` (indices count down from
      ``num_steps - 1`` to 0; a traced int is allowed): the images stay partway, as ESD's
      ``quick_sample_till_t`` leaves them; the skipped steps cost nothing (``lax.cond``).
  """
  if method not in ('ddim', 'ddpm'):
    raise ValueError(f"method must be 'ddim' or 'ddpm', got {method!r}")
  ts = timesteps(schedule.num_timesteps, num_steps) + steps_offset
  gap = schedule.num_timesteps // num_steps
  final = 1.0 if set_alpha_to_one else schedule.alphas_cumprod[0]
  init_key, loop_key = jax.random.split(key)

  def update(x, t, step_key):
    eps = guided_eps(eps_fn, x, t, labels, guidance_scale, null_class)
    noise = _normal(step_key, x.shape, index).astype(x.dtype)
    if method == 'ddpm':
      return ddpm_step(schedule, x, eps, t, t - gap, noise, clip)
    return ddim_step(schedule, x, eps, t, t - gap, noise, eta, clip, final)

  def body(x, inputs):
    step_index, t, step_key = inputs
    if stop_index is None:
      return update(x, t, step_key), None
    return jax.lax.cond(step_index >= stop_index, lambda x: update(x, t, step_key),
                        lambda x: x, x), None

  x = _normal(init_key, shape, index) if x_init is None else x_init
  x, _ = jax.lax.scan(body, x, (jnp.arange(num_steps - 1, -1, -1), jnp.asarray(ts),
                                jax.random.split(loop_key, num_steps)), unroll=unroll)
  return x


def make_sampler(model, schedule: NoiseSchedule, shape, **options):
  """``sampler(variables, key, labels) -> images``: :func:`sample` of a flax diffusion
  model (``model.apply(variables, x, t, labels)``), jit-compiled once."""
  def run(variables, key, labels):
    eps_fn = lambda x, t, y: model.apply(variables, x, t, y)
    return sample(eps_fn, schedule, shape, key, labels, **options)
  return jax.jit(run)


def make_text_to_image_sampler(unet, vae, schedule: NoiseSchedule, latent_shape, *,
                               num_steps: int = 50, guidance_scale: float = 7.5,
                               eta: float = 0.0, steps_offset: int = 1,
                               set_alpha_to_one: bool = False, unroll: int | bool = 1):
  """Stable Diffusion's text-to-image sampling as one compiled program:
  ``sampler(unet_variables, vae_variables, states, null_states, key, latents=None) ->
  images [B, H, W, 3] in [-1, 1]``.

  DDIM over ``num_steps`` steps from ``latents`` (``latent_shape``, default: drawn from
  ``key``) with classifier-free guidance toward the prompts' text states ``states``
  (``[B, 77, D]``) against ``null_states``, the empty prompt's (``[1, 77, D]``), then the
  VAE's decoder on ``latents / scaling_factor``: what diffusers' ``StableDiffusionPipeline``
  with SD's ``DDIMScheduler`` config computes (``tests/test_stable_diffusion.py`` checks the
  images against it). The defaults are that config's: scaled-linear betas (``schedule``),
  ``steps_offset`` 1, ``set_alpha_to_one`` False, no clipping, guidance 7.5.
  """
  def run(unet_variables, vae_variables, states, null_states, key, latents=None):
    eps_fn = lambda x, t, c: unet.apply(unet_variables, x, t, c)
    z = sample(eps_fn, schedule, (states.shape[0], *latent_shape), key, states,
               num_steps=num_steps, eta=eta, guidance_scale=guidance_scale,
               null_class=null_states,
               clip=False, unroll=unroll, x_init=latents, steps_offset=steps_offset,
               set_alpha_to_one=set_alpha_to_one)
    return vae.apply(vae_variables, z, method=vae.decode_latents)
  return jax.jit(run)


@functools.partial(jax.jit, static_argnames=('size',))
def to_grid(images, size: int | None = None):
  """``[N, H, W, C]`` images in [-1, 1] as one ``[rows*H, cols*W, C]`` grid in [0, 1]."""
  n, h, w, c = images.shape
  cols = size or int(np.ceil(np.sqrt(n)))
  rows = -(-n // cols)
  pad = rows * cols - n
  images = jnp.concatenate([images, -jnp.ones((pad, h, w, c), images.dtype)])
  grid = images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h,
                                                                               cols * w, c)
  return (jnp.clip(grid, -1, 1) + 1) / 2
