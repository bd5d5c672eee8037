"""Diffusion: noise schedules, the forward process and loss, DDPM/DDIM sampling with
classifier-free guidance."""
from jaxunlearn.diffusion.samplers import (ddim_step, ddpm_step, guided_eps, make_sampler,
                                           make_text_to_image_sampler, sample, timesteps,
                                           to_grid)
from jaxunlearn.diffusion.schedules import (NoiseSchedule, cosine_schedule, drop_labels,
                                            eps_mse, linear_schedule, q_sample,
                                            scaled_linear_schedule, schedule_from_config)

__all__ = ['NoiseSchedule', 'cosine_schedule', 'ddim_step', 'ddpm_step', 'drop_labels',
           'eps_mse', 'guided_eps', 'linear_schedule', 'make_sampler',
           'make_text_to_image_sampler', 'q_sample', 'sample', 'scaled_linear_schedule',
           'schedule_from_config', 'timesteps', 'to_grid']
