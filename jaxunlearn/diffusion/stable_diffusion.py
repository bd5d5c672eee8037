"""Erasing a concept from a converted Stable Diffusion with the library's methods.

:func:`erase_concept` is SalUn's ``SD/train-scripts`` workflow on the shared core: the
forget and retain prompt sets become one prompt-conditioned model over the frozen CLIP
states of their prompts (ordered by case number, the empty prompt last:
:func:`jaxunlearn.diffusion.text.sd_prompt_model`); the original makes the forget and
retain images from those prompts (or the user gives them), the VAE encodes them to latents
(a draw from its posterior times 0.18215, as the reference's ``get_first_stage_encoding``);
then any method of :data:`SD_METHODS` runs through :class:`GenerationTask` and
``GENERATION_METHODS`` as on every other diffusion model, on every device mode, and only
the UNet changes.

SalUn's pseudo prompt (``(i + 1) mod P``) is the next prompt by case number: with
:func:`~jaxunlearn.data.prompts.imagenette_prompt_sets` the next Imagenette class, as
``random_label.py``'s ``(class_to_forget + 1) % 10``; with
:func:`~jaxunlearn.data.prompts.nudity_prompt_sets` "a photo of a person wearing clothes",
as ``nsfw_removal.py``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data.prompts import PromptSet
from jaxunlearn.diffusion.methods import SFRON_SD_LOSSES
from jaxunlearn.parallel import SINGLE, Parallel

SD_METHODS = ('esd', 'salun', 'sfron', 'lur', 'ga')
# The references' settings on Stable Diffusion (SalUn's SD/train-scripts: Adam 1e-5, batches
# of 8, no clipping, no prompt dropout, alpha 0.5 for Imagenette classes; ESD's own defaults
# are train-esd.py's already). SFR-on's SD code (its SD/train-scripts/nsfw_removal.py)
# alternates a forget step on SalUn's pseudo-prompt loss (no ascent), masked by the Fisher
# ratio, with a retain step on the latent diffusion loss (both pixel means, forget_alpha and
# remain_alpha 1, constant, unclipped, one Adam at 1e-5; its README: batches of 2, 1000
# iterations; we keep batches of 8 as the others). LUR has no Stable Diffusion script in
# the references: it gets SalUn's settings. The user's overrides go on top.
SD_SETTINGS = {
    'salun': {'lr': 1e-5, 'batch_size': 8, 'clip_norm': 0.0, 'cond_drop_prob': 0.0,
              'retain_weight': 0.5},
    'sfron': {'lr': 1e-5, 'batch_size': 8, 'clip_norm': 0.0, 'cond_drop_prob': 0.0,
              'forget_cond_drop_prob': 0.0, 'retain_weight': 1.0, **SFRON_SD_LOSSES},
    'lur': {'lr': 1e-5, 'batch_size': 8, 'clip_norm': 0.0, 'cond_drop_prob': 0.0,
            'retain_weight': 0.5},
    'ga': {'lr': 1e-5, 'batch_size': 8, 'clip_norm': 0.0, 'cond_drop_prob': 0.0},
    'esd': {},
}
_STEP_FIELD = {'salun': 'steps', 'lur': 'steps', 'ga': 'steps', 'sfron': 'iterations'}


@dataclasses.dataclass
class Erasure:
  """What :func:`erase_concept` made: the unlearned UNet's params and how."""
  unet_params: dict
  method: str
  hparams: dict
  prompts: list
  forget_images: int
  retain_images: int
  seconds: float


def concept_prompts(forget: PromptSet, retain: PromptSet) -> tuple[list[str], dict]:
  """The prompt model's prompts: both sets' prompts ordered by case number, then the empty
  prompt; and each prompt's id. A case number in both sets, or one prompt in both, is an
  error."""
  cases = {}
  for ps in (forget, retain):
    for case, prompt in zip(ps.case_numbers, ps.prompts):
      if case in cases:
        raise ValueError(f'case number {case} is in both prompt sets (or twice): the pseudo '
                         'prompt is the next by case number, so they must be distinct')
      cases[case] = prompt
  both = set(forget.prompts) & set(retain.prompts)
  if both:
    raise ValueError(f'prompts in both the forget and the retain set: {sorted(both)[:3]}')
  prompts = [cases[c] for c in sorted(cases)] + ['']
  return prompts, {p: i for i, p in enumerate(prompts) if p}


def encode_images(vae, vae_params, images, key, batch_size: int = 8) -> np.ndarray:
  """Scaled latents of ``images`` ([-1, 1], NHWC): a draw from the VAE's posterior each."""
  fn = jax.jit(lambda x, k: vae.apply({'params': vae_params}, x, sample=True,
                                      method=vae.encode_latents, rngs={'latent': k}))
  return np.concatenate([np.asarray(fn(jnp.asarray(images[i:i + batch_size], jnp.float32),
                                       jax.random.fold_in(key, i)))
                         for i in range(0, len(images), batch_size)])


def erase_concept(sd, forget: PromptSet, retain: PromptSet, method: str = 'salun',
                  overrides: dict | None = None, *, epochs: int = 5,
                  images_per_prompt: int | None = None, forget_images=None, retain_images=None,
                  image_size: int = 512, sample_steps: int = 50, guidance_scale: float = 7.5,
                  batch_size: int = 4, seed: int = 0, parallel: Parallel = SINGLE,
                  progress: bool = True) -> Erasure:
  """Erases ``forget``'s concept from a converted Stable Diffusion ``sd`` (a folder written
  by ``jaxunlearn convert-sd``, or :func:`~jaxunlearn.convert.stable_diffusion.
  load_sd_checkpoint`'s dict) with ``method`` (one of :data:`SD_METHODS`), keeping
  ``retain``'s.

  Args:
    overrides: hyperparameters over :data:`SD_SETTINGS` and the method's defaults.
    epochs: passes over the forget images (the references: 5 for a class, 1 for nudity)
      setting the steps, unless ``overrides`` gives them.
    images_per_prompt: images the original makes of each prompt (default: 800 forget
      images in all, SalUn's nudity setting, and as many per retain prompt);
      ``forget_images`` / ``retain_images`` (``[N, size, size, 3]`` in [-1, 1], one array
      per set, the images of prompt ``i % len(set)`` at row ``i``) replace them.
    image_size, sample_steps, guidance_scale, batch_size: the generation's.
  """
  from jaxunlearn.convert.stable_diffusion import load_sd_checkpoint
  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  from jaxunlearn.diffusion.text import prompt_states, sd_prompt_model
  from jaxunlearn.diffusion.train import DiffusionConfig
  from jaxunlearn.diffusion.unlearn import GenerationTask
  from jaxunlearn.evaluate.prompts import StableDiffusionGenerator, generate_prompt_images
  from jaxunlearn.methods import resolve_hparams
  if method not in SD_METHODS:
    raise ValueError(f'unknown Stable Diffusion method {method!r}; known: {", ".join(SD_METHODS)}')
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1, got {epochs}')
  start = time.perf_counter()
  if not isinstance(sd, dict):
    sd = load_sd_checkpoint(sd, remat=True)
  # the original's sampler (its scheduler config read, what we cannot follow refused) and
  # tokenizer; nothing compiles until it generates
  generator = StableDiffusionGenerator.from_sd(sd, image_size=image_size, num_steps=sample_steps,
                                               guidance_scale=guidance_scale)
  config = sd['scheduler_config']
  if config.get('beta_schedule') != 'scaled_linear' or (
      config.get('beta_start'), config.get('beta_end')) != (0.00085, 0.012):
    raise ValueError('the scheduler config is not Stable Diffusion\'s scaled-linear betas '
                     '0.00085..0.012, the only betas the unlearning objectives take here')
  prompts, ids = concept_prompts(forget, retain)
  tokens = generator.tokenizer(prompts)   # a prompt past the context: an error, before compute
  overrides = dict(overrides or {})
  hp_values = {**SD_SETTINGS[method], **overrides}
  hp_values = resolve_hparams(method, hp_values, GENERATION_METHODS).to_dict()  # checked now

  def images_of(ps: PromptSet, given, n_per_prompt):
    """``(images or None, prompt ids)`` of one set."""
    if given is not None:
      given = np.asarray(given, np.float32)
      if given.ndim != 4 or given.shape[-1] != 3 or len(given) == 0:
        raise ValueError(f'images for {ps.name!r} must be [N, H, W, 3] in [-1, 1], got '
                         f'{given.shape}')
      rows = np.arange(len(given)) % len(ps)
      return given, np.asarray([ids[ps.prompts[r]] for r in rows], np.int32)
    if method == 'esd':   # ESD needs no images: only the concept's ids and the latent shape
      return None, np.asarray([ids[p] for p in ps.prompts], np.int32)
    made = generate_prompt_images(generator, ps, n_per_prompt, batch_size=batch_size,
                                  progress=progress)
    return made.images, np.asarray([ids[ps.prompts[r]] for r in made.rows], np.int32)

  n_forget = images_per_prompt or math.ceil(800 / len(forget))
  n_retain = images_per_prompt or max(1, math.ceil(800 / len(retain)))
  key = jax.random.PRNGKey(seed)
  side = image_size // 2 ** (len(sd['vae'].block_out_channels) - 1)
  sets = []
  for i, (ps, given, n) in enumerate(((forget, forget_images, n_forget),
                                      (retain, retain_images, n_retain))):
    images, labels = images_of(ps, given, n)
    if images is None:   # ESD's placeholders: distinct draws, only their shape is used
      latent = np.asarray(jax.random.normal(jax.random.fold_in(key, i),
                                            (len(labels), side, side,
                                             sd['vae'].latent_channels)))
    else:
      latent = encode_images(sd['vae'], sd['vae_params'], images, jax.random.fold_in(key, i))
    sets.append((latent, labels))
  (fx, fy), (rx, ry) = sets
  states = prompt_states(sd['text_encoder'], sd['text_params'], tokens)
  model, variables = sd_prompt_model(sd['unet'], sd['unet_params'], states)
  task = GenerationTask(model, variables, fx, fy, rx, ry, len(prompts) - 1,
                        DiffusionConfig(schedule='scaled_linear',
                                        num_timesteps=int(config.get('num_train_timesteps',
                                                                     1000)),
                                        cond_drop_prob=0.0),
                        seed, progress, parallel=parallel, latents=True)
  field = _STEP_FIELD.get(method)
  if field is not None and field not in overrides:
    hp_values[field] = epochs * math.ceil(len(fy) / hp_values['batch_size'])
  hp = resolve_hparams(method, hp_values, GENERATION_METHODS)
  out = GENERATION_METHODS[method].run(task, hp)
  return Erasure(out['params']['unet'], method, hp.to_dict(), prompts, len(fy), len(ry),
                 time.perf_counter() - start)


def save_erasure(erasure: Erasure, out_dir: str | Path, metadata: dict | None = None) -> Path:
  """``out_dir/unet`` (orbax: ``{'params': unet params}``, what ``jaxunlearn eval-prompts
  --unet`` reads) and ``out_dir/erasure.json`` (method, hyperparameters, prompts, sizes,
  time, and ``metadata``)."""
  from jaxunlearn.checkpoint import save_variables, write_json_atomic
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  save_variables(out / 'unet', {'params': erasure.unet_params})
  write_json_atomic(out / 'erasure.json', {
      **(metadata or {}), 'method': erasure.method, 'hparams': erasure.hparams,
      'prompts': erasure.prompts, 'forget_images': erasure.forget_images,
      'retain_images': erasure.retain_images, 'seconds': erasure.seconds})
  return out
