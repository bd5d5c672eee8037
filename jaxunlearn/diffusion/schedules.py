"""Noise schedules, the forward process and the denoising loss of DDPM.

A :class:`NoiseSchedule` holds ``betas`` and ``alphas_cumprod`` (computed in float64,
stored float32) for ``T`` training timesteps, as diffusers' ``DDPMScheduler`` builds them:
``linear`` (Ho et al. 2020: beta from 1e-4 to 0.02) and ``cosine`` (Nichol & Dhariwal
2021, diffusers' ``squaredcos_cap_v2``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.parallel import draw, split_key


class NoiseSchedule(NamedTuple):
  """``betas[t]`` and ``alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])``, t = 0..T-1."""

  betas: jax.Array
  alphas_cumprod: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def _schedule(betas: np.ndarray) -> NoiseSchedule:
  if not (np.all(betas > 0) and np.all(betas < 1)):
    raise ValueError('betas must lie in (0, 1)')
  return NoiseSchedule(jnp.asarray(betas, jnp.float32),
                       jnp.asarray(np.cumprod(1.0 - betas), jnp.float32))


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> NoiseSchedule:
  """Betas linear from ``beta_start`` to ``beta_end`` (DDPM's schedule)."""
  if num_timesteps < 1:
    raise ValueError(f'num_timesteps must be >= 1, got {num_timesteps}')
  return _schedule(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64))


def cosine_schedule(num_timesteps: int = 1000, s: float = 0.008,
                    max_beta: float = 0.999) -> NoiseSchedule:
  """``alpha_bar(t) = cos^2((t/T + s) / (1 + s) pi/2)``, betas capped at ``max_beta``."""
  if num_timesteps < 1:
    raise ValueError(f'num_timesteps must be >= 1, got {num_timesteps}')
  alpha_bar = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
  t = np.arange(num_timesteps, dtype=np.float64)
  betas = np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps),
                        max_beta) for i in t])
  return _schedule(betas)


def _bcast(values, x):
  return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def q_sample(schedule: NoiseSchedule, x0, t, noise):
  """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise`` (per example ``t``)."""
  abar = _bcast(schedule.alphas_cumprod[t], x0)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def eps_mse(eps_fn, schedule: NoiseSchedule, x0, labels, key, t=None, noise=None):
  """Per-example DDPM loss ``mean over pixels (eps_fn(x_t, t, labels) - noise)^2`` with
  ``t ~ U{0..T-1}`` and ``noise ~ N(0, I)`` drawn from ``key`` (unless given).

  ``eps_fn(x_t, t, labels) -> eps`` is the model (e.g. ``partial(unet.apply, variables)``);
  ``labels`` may be None for an unconditional model. ``key`` may be a
  :class:`jaxunlearn.parallel.ShardKey` (the draws are then the global batch's rows).
  """
  kt, kn = split_key(key)
  if t is None:
    t = draw(kt, lambda k, s: jax.random.randint(k, s, 0, schedule.num_timesteps),
             (x0.shape[0],))
  if noise is None:
    noise = draw(kn, lambda k, s: jax.random.normal(k, s, x0.dtype), x0.shape)
  pred = eps_fn(q_sample(schedule, x0, t, noise), t, labels)
  return jnp.mean((pred - noise) ** 2, axis=tuple(range(1, x0.ndim)))


def drop_labels(labels, key, prob: float, null_class: int):
  """Classifier-free guidance training: each label replaced by ``null_class`` with
  probability ``prob``."""
  return jnp.where(draw(key, jax.random.uniform, labels.shape) < prob, null_class, labels)
