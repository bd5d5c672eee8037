"""Forgetting a class of a class-conditional diffusion model: the task and what it adds.

The diffusion task plugs into the shared core: its objective is
:class:`jaxunlearn.diffusion.objectives.Denoiser`, and its methods
(:mod:`jaxunlearn.diffusion.methods`) run on the same loops (:func:`jaxunlearn.train.fit`,
``fit_joint``, ``fit_fast_slow``), steps and optimizer (:class:`jaxunlearn.optim.OptimSpec`)
as classification, on every device (``GenerationTask.parallel``), with the same saliency
and Fisher statistics (:mod:`jaxunlearn.saliency`). What is diffusion's own: the task and
its checks, Selective Amnesia's ELBO Fisher, and sampling.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.diffusion.objectives import (AdaptiveDenoisingAscent, Denoiser,  # noqa: F401
                                             Denoising, RemappedClass, has_dropout)
from jaxunlearn.diffusion.samplers import sample
from jaxunlearn.diffusion.schedules import q_sample
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.methods import TaskSets, check_sets, shared_examples
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.train import LoopControl, epoch_batches


@dataclasses.dataclass(frozen=True)
class GenerationTask(TaskSets):
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
    latents: the images are a VAE's latents (any finite values), not pixels in [-1, 1]
      (a latent diffusion model such as Stable Diffusion).
    concept_y: the ids of the prompts that name the concept alone ("three", "3"; what
      ESD is given, as ``train-esd.py``'s ``--prompt 'nudity'``); ``None``: the forget
      labels.
    seed, progress, callback, callback_every, parallel, control: as
      :class:`jaxunlearn.methods.UnlearnTask` (``parallel``: the steps, masks and Fisher
      statistics run on its devices; 'vmap' ensembles are not supported here).
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
  parallel: Parallel = SINGLE
  control: LoopControl | None = None
  latents: bool = False
  concept_y: np.ndarray | None = None

  def __post_init__(self):
    check_sets(self)
    if self.concept_y is not None:
      concept = np.asarray(self.concept_y)
      if concept.ndim != 1 or len(concept) == 0 or not np.issubdtype(concept.dtype, np.integer):
        raise ValueError(f'concept_y must be a non-empty 1-D array of prompt ids, got '
                         f'{concept.dtype} {concept.shape}')
      if concept.min() < 0 or concept.max() >= self.num_classes:
        raise ValueError(f'concept_y holds ids outside 0..{self.num_classes - 1}: '
                         f'{concept.min()}..{concept.max()}')
    if self.parallel.is_ensemble:
      raise ValueError("diffusion unlearning runs one model: parallel mode 'vmap' (an "
                       "ensemble) is for classification; use 'none', 'pmap' or 'shard'")
    for what, x in (('forget', self.forget_x), ('retain', self.retain_x)):
      if self.latents:
        if not np.isfinite(x).all():
          raise ValueError(f'{what} latents contain NaN or inf')
      elif np.min(x) < -1.001 or np.max(x) > 1.001:
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

  @property
  def concept_labels(self) -> np.ndarray:
    """The prompts naming the concept alone (``concept_y``), else the forget labels."""
    return np.asarray(self.forget_y if self.concept_y is None else self.concept_y, np.int32)

  def validate(self) -> None:
    """Checks that cost a pass over the data (no forget image in the retain set) and that
    the model takes the images with these variables."""
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

  def objective(self, loss) -> Denoiser:
    """The task's objective for a denoising loss (:mod:`jaxunlearn.diffusion.objectives`):
    the model in training mode where it has dropout, as the references unlearn."""
    return Denoiser(self.model, self.diffusion, loss, train=has_dropout(self.model))

  def statistic(self, loss) -> Denoiser:
    """The objective of the statistics computed before a loop (saliency, Fishers): eval
    mode, as the references compute them (``model.eval()``)."""
    return Denoiser(self.model, self.diffusion, loss)



@functools.lru_cache(maxsize=8)
def _example_fisher(model, diffusion: DiffusionConfig, timesteps: int, parallel: Parallel):
  schedule = diffusion.noise_schedule()
  T = schedule.num_timesteps

  def one(params, rest, x, y, key):
    # Stratified timesteps: (T / n) sum_j l_{t_j} estimates the ELBO's sum over all T.
    k_t, k_n = jax.random.split(key)
    t = (jnp.arange(timesteps) * T // timesteps
         + jax.random.randint(k_t, (timesteps,), 0, max(T // timesteps, 1)))
    xs, ys = jnp.repeat(x[None], timesteps, 0), jnp.repeat(y[None], timesteps, 0)
    noise = jax.random.normal(k_n, xs.shape)

    def elbo(p):
      eps_fn = lambda xt, tt, c: model.apply({'params': p, **rest}, xt, tt, c)
      pred = eps_fn(q_sample(schedule, xs, t, noise), t, ys)
      return T / timesteps * jnp.sum((pred - noise) ** 2)
    return jax.tree.map(jnp.square, jax.grad(elbo)(params))

  def batch_sum(args, batch):  # sum over the (weighted) images of this device's rows
    params, rest, key = args  # rest: the model's other collections (a prompt table)
    # One image at a time (lax.scan), not vmap: under a batch-sharded jit, XLA:CPU (jax
    # 0.10) returns zero for the per-example conv-kernel gradients of every device but the
    # first (tests/test_parallel.py checks this Fisher on 8 devices).
    def add(total, example):
      x, y, w, i = example
      f = one(params, rest, x, y, jax.random.fold_in(key, i))
      return jax.tree.map(lambda t, g: t + w * g, total, f), None
    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(add, zeros, batch)
    return total if parallel.axis_name is None else jax.lax.psum(total, parallel.axis_name)
  return parallel.batched(batch_sum)


def elbo_fisher(task: GenerationTask, x, y, timesteps: int = 20, batch_size: int = 8,
                seed: int = 0):
  """Diagonal Fisher of the original model for Selective Amnesia's EWC: the mean over
  images of the squared per-image gradient of the denoising ELBO, ``sum_t l_t`` over all T
  timesteps (the SA reference sums all 1000 per image); we estimate that sum from
  ``timesteps`` stratified ones, scaled by ``T / timesteps``. Image ``i`` draws its
  timesteps and noise from ``fold_in(key(seed), i)``, so the sum is the same however it is
  batched: in batches of ``batch_size`` (rounded up to a multiple of the device count, the
  last padded with weight-0 rows) split over ``task.parallel``'s devices."""
  if len(y) == 0:
    raise ValueError('elbo_fisher: no images')
  size = task.parallel.size
  fn = _example_fisher(task.model, task.diffusion, timesteps, task.parallel)
  params, key, total = task.variables['params'], jax.random.key(seed), None
  rest = {k: v for k, v in task.variables.items() if k != 'params'}
  for idx, w in epoch_batches(len(y), -(-batch_size // size) * size, 0, 0, shuffle=False,
                              multiple_of=size):
    f = fn((params, rest, key), (x[idx], y[idx], w, idx.astype(np.int32)))
    total = f if total is None else jax.tree.map(jnp.add, total, f)
  return jax.tree.map(lambda f: f / len(y), total)


@functools.lru_cache(maxsize=16)
def _sampler(model, diffusion: DiffusionConfig, image_shape, num_steps: int, guidance: float,
             null_class: int, parallel: Parallel, eta: float = 0.0, clip: bool = True):
  schedule = diffusion.noise_schedule()

  def run(args, batch):
    variables, key = args
    labels, index = batch
    eps_fn = lambda x, t, y: model.apply(variables, x, t, y)
    return sample(eps_fn, schedule, (labels.shape[0], *image_shape), key, labels,
                  num_steps=num_steps, eta=eta, guidance_scale=guidance,
                  null_class=null_class, clip=clip, index=index)
  return parallel.batched(run, per_example=True)


def generate(model, variables, diffusion: DiffusionConfig, labels, image_shape, seed: int = 0,
             *, num_steps: int = 50, guidance: float = 2.0, eta: float = 0.0,
             clip: bool = True, batch_size: int = 100, parallel: Parallel = SINGLE):
  """Images of ``labels`` from DDIM (``num_steps``, classifier-free guidance ``guidance``
  in diffusers' convention, ``eta``, x0 clipped to [-1, 1] with ``clip``); numpy
  ``[N, *image_shape]`` in [-1, 1].

  Image ``i``'s noise is drawn from ``fold_in(key(seed), i)`` (``samplers.sample``'s
  ``index``), so the images are the same whatever ``batch_size`` and on however many
  devices: with ``parallel``, each compiled batch (``batch_size`` rounded up to a multiple
  of the device count; the last one padded) is split over its devices.
  """
  labels = np.asarray(labels, np.int32)
  if labels.ndim != 1 or not len(labels):
    raise ValueError(f'generate: labels must be a non-empty 1-D array, got shape '
                     f'{labels.shape}')
  size = -(-min(batch_size, len(labels)) // parallel.size) * parallel.size
  sampler = _sampler(model, diffusion, tuple(image_shape), num_steps, float(guidance),
                     model.num_class_embeds - 1, parallel, float(eta), bool(clip))
  key, out = jax.random.key(seed), []
  for start in range(0, len(labels), size):
    chunk = labels[start:start + size]
    pad = size - len(chunk)
    batch = (np.concatenate([chunk, np.zeros(pad, np.int32)]),
             np.arange(start, start + size, dtype=np.int32))
    out.append(sampler((variables, key), batch))
  return parallel.rows(out, len(labels))  # (across processes: one gather for all images)
