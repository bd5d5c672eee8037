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


def scaled_linear_schedule(num_timesteps: int = 1000, beta_start: float = 0.00085,
                           beta_end: float = 0.012) -> NoiseSchedule:
  """Betas whose square roots are linear from ``sqrt(beta_start)`` to ``sqrt(beta_end)``
  (diffusers' ``scaled_linear``: Stable Diffusion's schedule, its defaults)."""
  if num_timesteps < 1:
    raise ValueError(f'num_timesteps must be >= 1, got {num_timesteps}')
  return _schedule(np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps,
                               dtype=np.float64) ** 2)


def schedule_from_config(config: dict) -> tuple[NoiseSchedule, dict]:
  """A diffusers scheduler config (``scheduler/scheduler_config.json``) as ``(schedule,
  sampler options)``: the betas (``linear`` or ``scaled_linear``) and the options
  ``steps_offset`` and ``set_alpha_to_one``. What our samplers cannot follow is an error
  naming it: another beta schedule, a prediction type other than ``epsilon`` (SD 2.x's
  768-pixel models predict ``v_prediction``), trained betas."""
  kind = config.get('beta_schedule', 'linear')
  if config.get('trained_betas') is not None:
    raise ValueError('the scheduler config gives trained_betas, which our schedules do not take')
  prediction = config.get('prediction_type', 'epsilon')
  if prediction != 'epsilon':
    raise ValueError(f'the scheduler config says prediction_type={prediction!r}; our samplers '
                     'and objectives take epsilon-predicting models only')
  n = int(config.get('num_train_timesteps', 1000))
  start, end = float(config.get('beta_start', 1e-4)), float(config.get('beta_end', 0.02))
  if kind == 'scaled_linear':
    schedule = scaled_linear_schedule(n, start, end)
  elif kind == 'linear':
    schedule = linear_schedule(n, start, end)
  else:
    raise ValueError(f"beta_schedule {kind!r} is not one of 'linear', 'scaled_linear'")
  return schedule, {'steps_offset': int(config.get('steps_offset', 0)),
                    'set_alpha_to_one': bool(config.get('set_alpha_to_one', True))}


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


def _normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _approx_normal_cdf(x):
  # The tanh approximation of the standard normal CDF that improved DDPM and DiT use.
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
  """log p(x) of 8-bit images in [-1, 1] under a Gaussian integrated over each pixel's bin
  (width 2/255), the edge bins open-ended; elementwise."""
  centered, inv_std = x - mean, jnp.exp(-log_scale)
  cdf_plus = _approx_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _approx_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus,
                   jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vlb_term(schedule: NoiseSchedule, x0, x_t, t, eps, var_values):
  """The variational term of improved DDPM's hybrid loss (Nichol & Dhariwal 2021, which
  DiT trains with, and SFR-on's DiT code ascends), per example, in bits per dimension.

  The model's variance interpolates in log space between the posterior's (clipped at
  ``t = 0``) and ``beta_t``: ``log var = f log beta_t + (1 - f) log var_post``, ``f =
  (var_values + 1) / 2`` ("learned range"); its mean is the posterior mean at the x0
  predicted from ``eps``, which the caller stops gradients through (the term trains only
  the variance). ``t > 0``: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)); ``t = 0``: the
  negative discretised log-likelihood of x0. The mean over dimensions, divided by ln 2.
  """
  betas = schedule.betas
  abar = schedule.alphas_cumprod
  # 1 - alpha_bar without cancellation (float32 1 - 0.9999 is 1.7e-4 off, which moves the
  # t = 0 likelihood by 0.3%; the reference computes in float64).
  one_minus = -jnp.expm1(jnp.cumsum(jnp.log1p(-betas)))
  abar_prev = jnp.concatenate([jnp.ones((1,), abar.dtype), abar[:-1]])
  one_minus_prev = jnp.concatenate([jnp.zeros((1,), abar.dtype), one_minus[:-1]])
  post_var = betas * one_minus_prev / one_minus
  post_logvar = jnp.log(jnp.concatenate([post_var[1:2], post_var[1:]]))  # clipped at t = 0
  coef_x0 = betas * jnp.sqrt(abar_prev) / one_minus
  coef_xt = one_minus_prev * jnp.sqrt(1.0 - betas) / one_minus
  b = lambda v: _bcast(v[t], x0)
  true_mean = b(coef_x0) * x0 + b(coef_xt) * x_t
  true_logvar = b(post_logvar)
  frac = (var_values + 1.0) / 2.0
  model_logvar = frac * b(jnp.log(betas)) + (1.0 - frac) * true_logvar
  pred_x0 = jnp.sqrt(1.0 / b(abar)) * x_t - jnp.sqrt(b(one_minus) / b(abar)) * eps
  model_mean = b(coef_x0) * pred_x0 + b(coef_xt) * x_t
  axes = tuple(range(1, x0.ndim))
  kl = jnp.mean(_normal_kl(true_mean, true_logvar, model_mean, model_logvar), axis=axes)
  nll = -jnp.mean(_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar),
                  axis=axes)
  return jnp.where(t == 0, nll, kl) / math.log(2.0)
