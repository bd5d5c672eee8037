"""Judging a text-to-image model on prompt sets: generate, score, report.

For every prompt of a :class:`~jaxunlearn.data.prompts.PromptSet` a generator makes
``images_per_prompt`` images, image ``j`` of prompt ``p`` from the starting noise
``normal(fold_in(PRNGKey(evaluation_seed[p]), j))`` (deterministic DDIM: the same images
for the same model on any batch size or device); a *scorer* labels them, and each set gives

- **forget** sets: ``UA`` (the forget rate, the references' unlearning accuracy): the share
  of images the scorer no longer gives the concept's label;
- **retain** sets: ``accuracy``: the share that keep their prompt's label;

per prompt (``per_case``) and in all, with FID against real images when features and real
images are given, and a sample grid per set. The scorer is pluggable: any
``images [N, H, W, C] in [-1, 1] -> int labels [N]``; :func:`classifier_scorer` wraps our
Flax classifiers, :func:`onnx_scorer` a user's ONNX model (an ImageNet classifier, a nudity
detector's classifier head) through ``onnxruntime``.

The references generate with diffusers and ``torch.manual_seed(evaluation_seed)``; the same
seed cannot give the same noise in JAX, so our numbers are comparable to theirs in
distribution, not image for image. Their evaluation scheduler is LMS at 100 steps; ours is
DDIM (``num_steps``, default 50).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data.prompts import PromptSet

Scorer = Callable[[np.ndarray], np.ndarray]


def prompt_noise(seeds, numbers, shape) -> jax.Array:
  """Starting noise ``[B, *shape]``: row ``i`` is ``normal(fold_in(PRNGKey(seeds[i]),
  numbers[i]), shape)``."""
  def one(seed, number):
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), number), shape,
                             jnp.float32)
  return jax.vmap(one)(jnp.asarray(seeds, jnp.uint32), jnp.asarray(numbers, jnp.uint32))


class StableDiffusionGenerator:
  """Images of a Stable Diffusion model (UNet + CLIP text encoder + tokenizer + VAE):
  ``generator(prompts, seeds, numbers) -> [B, size, size, 3]`` in [-1, 1], DDIM with
  classifier-free guidance on the empty prompt (:func:`make_text_to_image_sampler`).

  ``StableDiffusionGenerator.from_checkpoint('sd-flax', unet_params=unlearned)`` reads what
  ``jaxunlearn convert-sd`` wrote; ``unet_params`` replaces the UNet's weights (the result
  of an unlearning run).
  """

  def __init__(self, unet, unet_params, text_encoder, text_params, tokenizer, vae,
               vae_params, *, image_size: int = 512, num_steps: int = 50,
               guidance_scale: float = 7.5, schedule=None, steps_offset: int = 1,
               set_alpha_to_one: bool = False):
    from jaxunlearn.diffusion.samplers import make_text_to_image_sampler
    from jaxunlearn.diffusion.schedules import scaled_linear_schedule
    factor = 2 ** (len(vae.block_out_channels) - 1)
    unet_factor = 2 ** (len(unet.block_out_channels) - 1)
    if image_size % (factor * unet_factor):
      raise ValueError(f'image_size {image_size} is not a multiple of {factor * unet_factor} '
                       f'(the VAE down-samples by {factor}, the UNet by {unet_factor})')
    self.latent_shape = (image_size // factor, image_size // factor, vae.latent_channels)
    self.unet_params, self.text_params, self.vae_params = unet_params, text_params, vae_params
    self.tokenizer = tokenizer
    self._encode = jax.jit(lambda p, t: text_encoder.apply({'params': p}, t)[0])
    self._sample = make_text_to_image_sampler(
        unet, vae, schedule if schedule is not None else scaled_linear_schedule(),
        self.latent_shape, num_steps=num_steps, guidance_scale=guidance_scale,
        steps_offset=steps_offset, set_alpha_to_one=set_alpha_to_one)
    self._null = None

  @classmethod
  def from_checkpoint(cls, path, *, unet_params=None, **options) -> 'StableDiffusionGenerator':
    """The model ``jaxunlearn convert-sd`` wrote to ``path`` (see :meth:`from_sd`)."""
    from jaxunlearn.convert.stable_diffusion import load_sd_checkpoint
    return cls.from_sd(load_sd_checkpoint(path), unet_params=unet_params, **options)

  @classmethod
  def from_sd(cls, sd: dict, *, unet_params=None, **options) -> 'StableDiffusionGenerator':
    """The model of ``load_sd_checkpoint``'s dict ``sd``, sampled with its scheduler
    config's betas and options; ``unet_params`` replaces the UNet's weights."""
    from jaxunlearn.convert.stable_diffusion import load_clip_tokenizer
    from jaxunlearn.diffusion.schedules import schedule_from_config
    schedule, sampler_options = schedule_from_config(sd['scheduler_config'])
    tokenizer = load_clip_tokenizer(sd['tokenizer_dir'],
                                    max_length=sd['text_encoder'].max_position_embeddings)
    return cls(sd['unet'], unet_params if unet_params is not None else sd['unet_params'],
               sd['text_encoder'], sd['text_params'], tokenizer, sd['vae'], sd['vae_params'],
               **{'schedule': schedule, **sampler_options, **options})

  def check(self, prompts: Sequence[str]) -> None:
    """Tokenizes ``prompts``: a prompt past the context is an error before any compute."""
    self.tokenizer(list(prompts))

  def __call__(self, prompts, seeds, numbers) -> np.ndarray:
    if self._null is None:
      self._null = self._encode(self.text_params, self.tokenizer(['']))
    states = self._encode(self.text_params, self.tokenizer(list(prompts)))
    latents = prompt_noise(seeds, numbers, self.latent_shape)
    return np.asarray(self._sample({'params': self.unet_params}, {'params': self.vae_params},
                                   states, self._null, jax.random.PRNGKey(0), latents))


class PromptModelGenerator:
  """Images of a prompt-conditioned diffusion model (:class:`~jaxunlearn.diffusion.text.
  PromptConditioned`, e.g. the digits text-to-image model) over its fixed prompt list
  ``prompts`` (the empty prompt last): DDIM, guidance toward the empty prompt."""

  def __init__(self, model, variables, schedule, prompts: Sequence[str], image_shape, *,
               num_steps: int = 50, guidance_scale: float = 2.0, clip: bool = True):
    from jaxunlearn.diffusion.samplers import sample
    self.index = {p: i for i, p in enumerate(prompts)}
    if len(prompts) != model.num_prompts:
      raise ValueError(f'{len(prompts)} prompts for a model of {model.num_prompts}')
    self.variables, self.image_shape = variables, tuple(image_shape)
    null = model.num_prompts - 1

    def run(variables, ids, x):
      eps_fn = lambda x, t, c: model.apply(variables, x, t, c)
      return sample(eps_fn, schedule, x.shape, jax.random.PRNGKey(0), ids,
                    num_steps=num_steps, guidance_scale=guidance_scale, null_class=null,
                    clip=clip, x_init=x)
    self._sample = jax.jit(run)

  def check(self, prompts: Sequence[str]) -> None:
    unknown = [p for p in prompts if p not in self.index]
    if unknown:
      raise ValueError(f'prompts the model was not built with: {unknown[:5]} (a prompt-'
                       f'conditioned model knows only its own {len(self.index)} prompts)')

  def __call__(self, prompts, seeds, numbers) -> np.ndarray:
    self.check(prompts)
    ids = jnp.asarray([self.index[p] for p in prompts], jnp.int32)
    return np.asarray(self._sample(self.variables, ids,
                                   prompt_noise(seeds, numbers, self.image_shape)))


@dataclasses.dataclass
class PromptImages:
  """The images of a prompt set: ``images[k]`` is image ``numbers[k]`` of prompt
  ``rows[k]`` (an index into the set)."""
  prompt_set: PromptSet
  images: np.ndarray
  rows: np.ndarray
  numbers: np.ndarray

  def expected(self) -> np.ndarray:
    if self.prompt_set.labels is None:
      raise ValueError(f'prompt set {self.prompt_set.name!r} has no labels to score against '
                       '(give a label column, or PromptSet.with_label)')
    return np.asarray(self.prompt_set.labels, np.int64)[self.rows]


def generate_prompt_images(generator, prompt_set: PromptSet, images_per_prompt: int = 10, *,
                           batch_size: int = 8, progress: bool = True) -> PromptImages:
  """``images_per_prompt`` images of every prompt of ``prompt_set`` (batches of
  ``batch_size``, the last one padded: one compiled shape)."""
  if images_per_prompt < 1 or batch_size < 1:
    raise ValueError(f'images_per_prompt and batch_size must be >= 1, got '
                     f'{images_per_prompt} and {batch_size}')
  generator.check(prompt_set.prompts)
  rows = np.repeat(np.arange(len(prompt_set)), images_per_prompt)
  numbers = np.tile(np.arange(images_per_prompt), len(prompt_set))
  seeds = np.asarray(prompt_set.seeds, np.int64)[rows] % 2**32
  out = []
  starts = range(0, len(rows), batch_size)
  if progress:
    from jaxunlearn.train import progress_bar
    starts = progress_bar(starts, desc=prompt_set.name)
  for start in starts:
    idx = np.arange(start, start + batch_size) % len(rows)  # padded with the first images
    images = generator([prompt_set.prompts[r] for r in rows[idx]], seeds[idx], numbers[idx])
    out.append(images[:min(batch_size, len(rows) - start)])
  return PromptImages(prompt_set, np.concatenate(out), rows, numbers)


def _to_uint8(images) -> np.ndarray:
  return np.round((np.clip(np.asarray(images, np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


def save_image_folder(prompt_images: PromptImages, folder: str | Path) -> Path:
  """Writes the images as ``{case_number}_{j}.png``, the references' naming (their
  ``imageclassify.py`` and ``nudenet-classes.py`` read such folders)."""
  from PIL import Image
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  cases = prompt_images.prompt_set.case_numbers
  for image, row, j in zip(_to_uint8(prompt_images.images), prompt_images.rows,
                           prompt_images.numbers):
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        folder / f'{cases[row]}_{j}.png')
  return folder


def load_image_folder(folder: str | Path, size: int | None = None) -> tuple[np.ndarray, list[str]]:
  """Images of a folder (png/jpg, sorted by name) as ``[N, H, W, 3]`` in [-1, 1] (resized
  to ``size`` x ``size`` when given), with their file names: forget or retain images made
  by :func:`save_image_folder` or by the references' scripts."""
  from PIL import Image
  folder = Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: no such folder of images')
  paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in ('.png', '.jpg', '.jpeg'))
  if not paths:
    raise ValueError(f'{folder}: no .png or .jpg images in it')
  images = []
  for p in paths:
    im = Image.open(p).convert('RGB')
    if size is not None and im.size != (size, size):
      im = im.resize((size, size), Image.BICUBIC)
    images.append(np.asarray(im, np.float32) / 127.5 - 1.0)
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise ValueError(f'{folder}: images of different sizes {sorted(shapes)}; give size=')
  return np.stack(images), [p.name for p in paths]


# ---------------------------------------------------------------------------------------
# Scorers: images [N, H, W, C] in [-1, 1] -> int labels [N].

def classifier_scorer(model, variables, *, image_size: int | None = None,
                      channels: int | None = None, batch_size: int = 256) -> Scorer:
  """Our Flax classifiers (``model.apply(variables, x, train=False) -> logits``) as a
  scorer: images resized to ``image_size`` and reduced to ``channels`` (1: the mean of RGB)
  when given, labels the argmax."""
  apply = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))

  def score(images):
    x = jnp.asarray(images, jnp.float32)
    if channels == 1 and x.shape[-1] == 3:
      x = x.mean(-1, keepdims=True)
    elif channels is not None and x.shape[-1] != channels:
      raise ValueError(f'the classifier takes {channels} channels, the images have '
                       f'{x.shape[-1]}')
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[-1]), 'linear')
    return np.concatenate([np.asarray(apply(variables, x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])
  return score


def onnx_scorer(path: str | Path, *, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                image_size: int | None = None, layout: str | None = None,
                threshold: float | None = None, output: int = 0,
                postprocess: Callable[[list], np.ndarray] | None = None,
                batch_size: int = 32) -> Scorer:
  """A user's ONNX model as a scorer, run by ``onnxruntime`` (``pip install onnxruntime``).

  Images go in as ``(x01 - mean) / std`` (``x01`` the pixels in [0, 1]), resized to
  ``image_size`` and laid out ``layout`` ('NCHW' or 'NHWC'); both default to what the
  model's input declares. The label is the argmax of output ``output`` (logits or
  probabilities, ``[N, classes]``), or with ``threshold`` ``1`` where a single score per
  image (``[N]`` or ``[N, 1]``) exceeds it (a detector: 1 = concept present), or whatever
  ``postprocess(outputs) -> [N]`` makes of all outputs (a detector with boxes, e.g.
  NudeNet's, whose classes and scores the user maps to present/absent).
  """
  try:
    import onnxruntime
  except ImportError:
    raise ImportError('onnx_scorer needs onnxruntime: pip install onnxruntime') from None
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such ONNX model file')
  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  spec = session.get_inputs()[0]
  shape = list(spec.shape)
  if layout is None:
    layout = 'NHWC' if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3) \
        else 'NCHW'
  if layout not in ('NCHW', 'NHWC'):
    raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
  if image_size is None and len(shape) == 4:
    side = shape[2] if layout == 'NCHW' else shape[1]
    image_size = side if isinstance(side, int) else None
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)

  def score(images):
    x = (np.asarray(images, np.float32) + 1.0) / 2.0
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
      x = np.asarray(jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[-1]),
                                      'linear'))
    x = (x - mean) / std
    if layout == 'NCHW':
      x = x.transpose(0, 3, 1, 2)
    labels = []
    for i in range(0, len(x), batch_size):
      outs = session.run(None, {spec.name: np.ascontiguousarray(x[i:i + batch_size])})
      if postprocess is not None:
        labels.append(np.asarray(postprocess(outs)).reshape(-1))
      elif threshold is not None:
        s = np.asarray(outs[output])
        if s.ndim > 1 and s.shape[-1] != 1:
          raise ValueError(f'threshold needs one score per image, output {output} has shape '
                           f'{s.shape} (leave threshold out to take the argmax)')
        labels.append((s.reshape(len(s)) > threshold).astype(np.int64))
      else:
        labels.append(np.argmax(np.asarray(outs[output]).reshape(len(outs[output]), -1), -1))
    return np.concatenate(labels).astype(np.int64)
  return score


# ---------------------------------------------------------------------------------------

def score_prompt_images(prompt_images: PromptImages, scorer: Scorer, role: str, *,
                        features=None, real_features=None) -> dict:
  """Scores of one set's images (see the module docstring); ``role`` 'forget' or
  'retain'."""
  if role not in ('forget', 'retain'):
    raise ValueError(f"role must be 'forget' or 'retain', got {role!r}")
  ps = prompt_images.prompt_set
  predicted = np.asarray(scorer(prompt_images.images)).reshape(-1)
  if len(predicted) != len(prompt_images.images):
    raise ValueError(f'the scorer gave {len(predicted)} labels for '
                     f'{len(prompt_images.images)} images')
  hit = predicted == prompt_images.expected()
  per_case = []
  for row in range(len(ps)):
    mine = prompt_images.rows == row
    per_case.append({'case_number': ps.case_numbers[row], 'prompt': ps.prompts[row],
                     'label': ps.labels[row], 'accuracy': float(hit[mine].mean() * 100),
                     'predicted': np.bincount(predicted[mine].clip(0)).argmax().item()})
  result = {'role': role, 'prompts': len(ps), 'images': int(len(hit)),
            'accuracy': float(hit.mean() * 100), 'per_case': per_case}
  if role == 'forget':
    result = {'UA': 100.0 - result['accuracy'], **result}
  if features is not None and real_features is not None:
    from jaxunlearn.evaluate.generation import fid_from_features
    result['FID'] = fid_from_features(real_features,
                                      features((prompt_images.images + 1.0) / 2.0))
  return result


def evaluate_prompt_sets(generator, sets: dict, scorer: Scorer, *, images_per_prompt: int = 10,
                         batch_size: int = 8, features=None, real_images: dict | None = None,
                         progress: bool = True) -> tuple[dict, dict]:
  """Generates and scores every set: ``sets`` maps a name to ``(PromptSet, role)``;
  ``real_images`` (optional) maps a name to real images in [-1, 1] to compute that set's
  FID with ``features`` (e.g. :class:`~jaxunlearn.evaluate.generation.InceptionFeatures`,
  which takes [0, 1]). Every set and prompt is checked before anything is generated.
  Returns ``(results, images)``, both keyed by set name."""
  if not sets:
    raise ValueError('no prompt sets to evaluate')
  for name, (prompt_set, role) in sets.items():
    if role not in ('forget', 'retain'):
      raise ValueError(f"set {name!r}: role must be 'forget' or 'retain', got {role!r}")
    if prompt_set.labels is None:
      raise ValueError(f'set {name!r} has no labels to score against (a label column, or '
                       'PromptSet.with_label)')
    generator.check(prompt_set.prompts)
  real_images = real_images or {}
  results, images = {}, {}
  for name, (prompt_set, role) in sets.items():
    images[name] = generate_prompt_images(generator, prompt_set, images_per_prompt,
                                          batch_size=batch_size, progress=progress)
    real = real_images.get(name)
    results[name] = score_prompt_images(
        images[name], scorer, role, features=features,
        real_features=None if real is None or features is None
        else features((np.asarray(real, np.float32) + 1.0) / 2.0))
  return results, images


def prompt_grid(prompt_images: PromptImages, rows: int = 10, columns: int = 8) -> np.ndarray:
  """A uint8 grid: one row per prompt (the first ``rows``), its first ``columns`` images."""
  ps, imgs = prompt_images.prompt_set, _to_uint8(prompt_images.images)
  h, w, c = imgs.shape[1:]
  rows = min(rows, len(ps))
  columns = min(columns, int(prompt_images.numbers.max()) + 1)
  grid = np.full((rows * (h + 2), columns * (w + 2), c), 255, np.uint8)
  for k, (row, j) in enumerate(zip(prompt_images.rows, prompt_images.numbers)):
    if row < rows and j < columns:
      grid[row * (h + 2) + 1:row * (h + 2) + 1 + h, j * (w + 2) + 1:j * (w + 2) + 1 + w] = imgs[k]
  return grid


def write_prompt_report(results: dict, images: dict, out_dir: str | Path, *,
                        metadata: dict | None = None) -> Path:
  """``results.json`` (the scores of every set, ``metadata`` added) and one
  ``grid-{set}.png`` per set, each row labelled with its prompt and score."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'results.json').write_text(json.dumps({**(metadata or {}), 'sets': results}, indent=1))
  for name, prompt_images in images.items():
    grid = prompt_grid(prompt_images)
    rows = min(10, len(prompt_images.prompt_set))
    fig, ax = plt.subplots(figsize=(max(4, grid.shape[1] / 40), max(2, grid.shape[0] / 40 + 0.6)))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap='gray')
    h = grid.shape[0] / rows
    ax.set_yticks([h * (r + 0.5) for r in range(rows)])
    cases = results[name]['per_case']
    ax.set_yticklabels([f"{c['prompt'][:40]}  ({c['accuracy']:.0f}%)" for c in cases[:rows]],
                       fontsize=7)
    ax.set_xticks([])
    score = (f"UA {results[name]['UA']:.1f}" if 'UA' in results[name]
             else f"accuracy {results[name]['accuracy']:.1f}")
    ax.set_title(f'{name} ({results[name]["role"]}): {score}', fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f'grid-{name}.png', dpi=120)
    plt.close(fig)
  return out
