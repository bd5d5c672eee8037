"""The generation job: train a class-conditional DDPM, forget a class, measure, report.

What ``jaxunlearn run --task generation`` calls::

    from jaxunlearn.diffusion.experiment import GenerationConfig, run_generation
    results = run_generation(GenerationConfig(scenario='class:3', methods=('sfron',)), 'out')

Per seed: the original DDPM (trained here on the images in [-1, 1], cached; or a converted
diffusers UNet, ``unet_path``), a generation
classifier (a ResNet trained on the real images, cached), then each method from the
original. Reported (docs/architecture.md, evaluation): **UA** = 100 - the classifier's accuracy on
``forget_samples`` samples of the forgotten class; **FID_forget**, the Frechet distance of
those samples to the forgotten class's real images (high: the class is no longer drawn, even
where the samples are noise or blobs the classifier still calls that class, which UA alone
misses); **FID** of samples of the remaining
classes against their real training images, in the classifier's feature space;
**acc_remaining**, the classifier's accuracy on those samples; **steps_to_forget**, the
first checked iteration with UA >= 95 (UA and FID_forget checked every ``check_every``
iterations, not timed);
**rte_s**. Written: ``results.json``, ``results.png`` (bars), ``forgetting.png`` (UA and
FID_forget over iterations) and ``samples.png`` (a grid of every class per model, the
forgotten row boxed).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxunlearn import checkpoint
from jaxunlearn.data import check_before_loading, make_split, parse_scenario
from jaxunlearn.data.digits import load_digits
from jaxunlearn.data.tfds import load_tfds
from jaxunlearn.diffusion.methods import DIT_RECIPE, GENERATION_METHODS, T2I_RECIPE
from jaxunlearn.diffusion.train import DiffusionConfig, train_diffusion
from jaxunlearn.diffusion.unlearn import GenerationTask, generate
from jaxunlearn.evaluate import summarize
from jaxunlearn.evaluate.generation import InceptionFeatures, fid_from_features
from jaxunlearn.experiment import _check_settings
from jaxunlearn.hparams import cast_like, did_you_mean
from jaxunlearn.job import Job, SeedRun, run_job
from jaxunlearn.methods import resolve_hparams
from jaxunlearn.models import digits_dit, digits_unet, make_model
from jaxunlearn.models.ddim_unet import digits_reference_unet, reference_cifar10_unet
from jaxunlearn.models.dit import DIT_CONFIGS
from jaxunlearn.models.unet import ddpm_cifar10_unet
from jaxunlearn.parallel import Parallel
from jaxunlearn.step import predict
from jaxunlearn.train import LoopControl, TrainConfig, train_classifier

# The references' evaluation sampler (SFR-on / SalUn DDPM ``sample.py``: ``--sample_type
# generalized --skip_type uniform --timesteps 1000 --eta 1.0 --cond_scale 2.0``, and
# ``generalized_steps_conditional`` does not clip x0): their cond_scale s guides as
# ``(1 + s) eps_c - s eps_u``, our g = 1 + s.
REFERENCE_SAMPLING = {'sample_steps': 1000, 'sample_eta': 1.0, 'sample_clip': False,
                      'guidance': 3.0}
# Ours, fast enough for a CPU: 50 deterministic DDIM steps, x0 clipped, g 2.
FAST_SAMPLING = {'sample_steps': 50, 'sample_eta': 0.0, 'sample_clip': True, 'guidance': 2.0}
MODELS = ('unet', 'ddpm-cifar10', 'ref-unet', 'ref-cifar10', 'dit', 't2i')
# How a model's original is trained when the config keeps its default ``ddpm`` (``--set
# ddpm.X=...`` still overrides; a ``ddpm`` of your own is taken as it is). The digits DiT
# learns its classes far more slowly than the UNet, and at the UNet's 1e-3 its weights swing
# from step to step: the UNet's 3000 decayed steps left seed 0 at UA 82 / acc_remaining 59.6
# and seed 2 at 35 / 68.0 (2026-12-06). So, as DiT itself trains: a constant rate and
# samples from the EMA of the weights; a rate of 3e-4 and 9000 steps, where the EMA of
# seeds 0 and 2 drew best (experiments/dit_training.py, docs/generation.md).
ORIGINAL_RECIPE = {'dit': {'lr': 3e-4, 'lr_schedule': 'constant', 'warmup': 500,
                           'ema_decay': 0.999, 'steps': 9000}}
# The text-to-image job's default methods (--task text-to-image): Stable Diffusion's erasers
# (SA and GA also run on the prompt model when named).
T2I_METHODS = ('esd', 'salun', 'sfron', 'lur')

REPORTED = ('UA', 'FID_forget', 'FID', 'acc_remaining', 'steps_to_forget', 'rte_s',
            'skipped_steps')
FORGOTTEN = 95.0  # UA (percent) at which a class counts as forgotten
GRID_PER_CLASS = 8


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Everything that defines a generation run; the defaults are the embedded digits.

  Attributes:
    dataset: 'digits' (embedded) or a TFDS name such as 'cifar10' (``data_dir``).
    data_dir: TFDS data directory (ignored for digits).
    image_size: side of the images (None: 8 for the digits, their native size; TFDS: as
      stored).
    model: 'unet' (:func:`jaxunlearn.models.digits_unet`, the default), 'ddpm-cifar10'
      (:func:`jaxunlearn.models.unet.ddpm_cifar10_unet`: the DDPM paper's CIFAR-10 UNet
      with a class embedding, diffusers-style), 'ref-unet'
      (:func:`jaxunlearn.models.ddim_unet.digits_reference_unet`: the references' DDPM
      UNet, class-embedding MLP, learned null vector, dropout 0.1, at the digits' scale),
      'ref-cifar10' (:func:`jaxunlearn.models.ddim_unet.reference_cifar10_unet`: theirs at
      CIFAR-10 scale), 'dit' (:func:`jaxunlearn.models.digits_dit`: a pixel-space DiT,
      patch 2) or 't2i' (``--task text-to-image``: the digits as a text-to-image dataset,
      :func:`jaxunlearn.diffusion.text.digits_text_to_image_model` trained on captions of
      :data:`~jaxunlearn.diffusion.text.TRAIN_TEMPLATES`, its text encoder frozen for
      unlearning; the forgotten concept is judged on the held-out captions).
    unet_path: the original model, loaded instead of trained: a diffusers ``UNet2DModel``
      folder (class-conditional, the last class id the null class), or a checkpoint of the
      references' DDPM code (their ``ckpts/ckpt.pth``, or the run folder holding it;
      :func:`jaxunlearn.convert.ddim_unet.load_reference_ddpm`).
    channels: ``block_out_channels`` of the 'unet' model ('ref-unet': its ``ch`` is the
      first).
    dit_size: the DiT's size, a key of :data:`jaxunlearn.models.dit.DIT_CONFIGS`.
    scenario: 'class:K'.
    methods: names from :data:`jaxunlearn.diffusion.methods.GENERATION_METHODS`.
    seeds: one original DDPM and one run of every method per seed.
    ddpm: how the original DDPM is trained (and its noise schedule); left at its default,
      the model's :data:`ORIGINAL_RECIPE` applies on top (the DiT's).
    classifier: how the generation classifier (ResNet-18, ``classifier_width``) is trained.
    overrides: ``{method: {hyperparameter: value}}`` (also 'ddpm' and 'classifier').
    cache_dir: cache of trained DDPMs and classifiers (None: none).
    progress: progress bars.
    check_every: iterations between UA checks (steps-to-forget); 0 = only at the end.
    forget_samples: samples of the forgotten class for UA.
    fid_samples_per_class: samples of each remaining class for FID and acc_remaining.
    fid_inception: pytorch-fid's Inception weight file (``pt_inception-2015-12-05-
      6726825d.pth``): FID in Inception pool-3 features instead of the classifier's.
    fid_real_per_class: real training images of each class behind FID's reference
      statistics, the first ones in the training set (None: all of them; a cap keeps
      Inception on a CPU affordable: CIFAR-10 has 5000 per class).
    sample_steps, sample_eta, sample_clip, guidance: the DDIM sampler of every evaluation:
      steps, eta (0 deterministic, 1 the DDPM posterior's noise), clipping the predicted x0
      to [-1, 1], and the guidance scale in diffusers' convention (``eps_u + g (eps_c -
      eps_u)``: 2.0 = w 1 of Ho & Salimans = the references' ``cond_scale`` 1.0). The
      defaults are the fast ones (:data:`FAST_SAMPLING`); :data:`REFERENCE_SAMPLING` is
      the references' evaluation sampler.
    checkpoint_every, max_nonfinite: as :class:`jaxunlearn.experiment.ExperimentConfig`.
    parallel, num_devices, shard_params: the devices unlearning runs on, as
      :class:`jaxunlearn.experiment.ExperimentConfig` (the methods' steps, saliency masks
      and Fisher statistics; training the original DDPM, sampling and scoring run on one).
  """

  dataset: str = 'digits'
  data_dir: str | None = None
  image_size: int | None = None
  model: str = 'unet'
  unet_path: str | None = None
  channels: Sequence[int] = (32, 64)
  dit_size: str = 'tiny'
  scenario: str = 'class:3'
  methods: Sequence[str] = ('salun', 'sfron', 'lur', 'sa', 'ga')
  seeds: Sequence[int] = (0,)
  ddpm: DiffusionConfig = DiffusionConfig(steps=3000, batch_size=64)
  classifier: TrainConfig = TrainConfig(epochs=20)
  classifier_width: int = 16
  overrides: dict = dataclasses.field(default_factory=dict)
  cache_dir: str | None = str(checkpoint.default_cache_dir())
  progress: bool = True
  check_every: int = 25
  forget_samples: int = 100
  fid_samples_per_class: int = 50
  fid_inception: str | None = None
  fid_real_per_class: int | None = None
  sample_steps: int = 50
  sample_eta: float = 0.0
  sample_clip: bool = True
  guidance: float = 2.0
  checkpoint_every: int = 50
  max_nonfinite: int | None = 10
  parallel: str = 'auto'
  num_devices: int | None = None
  shard_params: bool = False

  def validate(self, devices: bool = True) -> None:
    """Checks names, scenario and overrides before any compute (ValueError says what);
    ``devices=False`` skips what depends on this host's devices (batches that must split
    over them)."""
    if self.model not in MODELS:
      raise ValueError(f"generation models: {', '.join(MODELS)} (unet the default), got "
                       f'{self.model!r}')
    if self.unet_path is not None and not Path(self.unet_path).exists():
      raise ValueError(f'unet_path {self.unet_path}: no such file or folder (a diffusers '
                       "UNet2DModel folder, or the references' ckpts/ckpt.pth)")
    if not 0 <= self.sample_eta <= 1 or self.sample_steps < 1 or not self.guidance >= 0:
      raise ValueError('sample_steps must be >= 1, sample_eta in [0, 1] and guidance >= 0, '
                       f'got {self.sample_steps}, {self.sample_eta}, {self.guidance}')
    if self.model == 't2i':
      if self.dataset != 'digits' or self.unet_path is not None:
        raise ValueError('the text-to-image job runs on the embedded digits (its own tiny '
                         'model, trained here); Stable Diffusion folders are loaded with '
                         'jaxunlearn.convert.stable_diffusion')
    if self.model == 'dit' and self.dit_size not in DIT_CONFIGS:
      raise ValueError(f'unknown DiT size {self.dit_size!r}; known: {", ".join(DIT_CONFIGS)}')
    if parse_scenario(self.scenario).kind != 'class':
      raise ValueError(f"generation forgets a class: use --scenario class:K, got "
                       f"{self.scenario!r}")
    if not self.methods or not self.seeds:
      raise ValueError('give at least one method and one seed')
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'seeds repeat: {list(self.seeds)}')
    for key in ('check_every', 'checkpoint_every'):
      if getattr(self, key) < 0:
        raise ValueError(f'{key} must be >= 0 (0 = off), got {getattr(self, key)}')
    if self.forget_samples < 1 or self.fid_samples_per_class < 2:
      raise ValueError('forget_samples must be >= 1 and fid_samples_per_class >= 2')
    if self.fid_real_per_class is not None and self.fid_real_per_class < 2:
      raise ValueError('fid_real_per_class must be >= 2 (a covariance needs two images) '
                       f'or None (all), got {self.fid_real_per_class}')
    if self.fid_inception is not None and not Path(self.fid_inception).is_file():
      raise ValueError(f'--fid-inception {self.fid_inception}: no such file (pytorch-fid\'s '
                       'pt_inception-2015-12-05-6726825d.pth, downloaded beforehand)')
    for name, hp in self.overrides.items():
      if name in ('ddpm', 'classifier'):
        _check_settings(hp, DiffusionConfig if name == 'ddpm' else TrainConfig, name)
      elif name not in self.methods:
        raise ValueError(f'--set names method {name!r}, which is not among --methods '
                         f'{",".join(self.methods)}'
                         f'{did_you_mean(name, [*self.methods, "ddpm", "classifier"])}')
    hparams = self.method_hparams()
    # raises for a mode or device count this host cannot run; without ``devices`` (what a
    # published result's command resolves to anywhere: reproduce.py) one device is assumed
    size = self.devices().size if devices else 1
    for name, hp in hparams.items():
      batch = getattr(hp, 'batch_size', None)
      if batch and batch % size:
        raise ValueError(f'{name}.batch_size={batch} does not split over the {size} devices '
                         f'the methods run on: --set {name}.batch_size={-(-batch // size) * size}'
                         ' or --parallel none')
    # A UNet keeps about 20 activations of its widest level per pixel and example.
    check_before_loading(self.dataset, self.image_size, self.scenario, data_dir=self.data_dir,
                         batch_size=self._replaced('ddpm').batch_size,
                         channels_per_pixel=20 * max(self.channels or (128,)))

  def method_hparams(self) -> dict:
    """``{method: its typed, checked hyperparameters}`` (recipe and overrides applied)."""
    return {n: resolve_hparams(n, self.method_overrides(n), GENERATION_METHODS)
            for n in self.methods}

  def resolved_hparams(self) -> dict:
    """``results.json``'s ``hparams`` as this config resolves them now (no compute): each
    method's, the DDPM's and the classifier's training settings."""
    return {**{n: hp.to_dict() for n, hp in self.method_hparams().items()},
            'ddpm': dataclasses.asdict(self._replaced('ddpm')),
            'classifier': dataclasses.asdict(self._replaced('classifier'))}

  def method_overrides(self, name: str) -> dict:
    """A method's hyperparameter overrides: the model's recipe (a DiT's ``sfron`` is SFR-on's
    DiT code, :data:`jaxunlearn.diffusion.methods.DIT_RECIPE`; the digits text-to-image
    model's ESD, :data:`~jaxunlearn.diffusion.methods.T2I_RECIPE`), then ``overrides``."""
    recipe = {'dit': DIT_RECIPE, 't2i': T2I_RECIPE}.get(self.model, {}).get(name, {})
    return {**recipe, **self.overrides.get(name, {})}

  def devices(self) -> Parallel:
    """The :class:`jaxunlearn.parallel.Parallel` the methods run on."""
    if self.parallel not in ('auto', 'none', 'pmap', 'shard'):
      raise ValueError(f"parallel must be 'auto', 'none', 'pmap' or 'shard', got "
                       f'{self.parallel!r}')
    return Parallel.from_setting(self.parallel, self.num_devices, self.shard_params)

  def load_data(self):
    """The dataset, pixels in [-1, 1]."""
    if self.dataset == 'digits':
      return load_digits(self.image_size or 8, pixels='symmetric')
    return load_tfds(self.dataset, self.data_dir, self.image_size, pixels='symmetric')

  def denoiser(self, num_classes: int, image_shape):
    """``(the class-conditional denoiser, its cache key and its description)``."""
    size, channels = image_shape[0], image_shape[-1]
    if self.model == 'ddpm-cifar10':
      # 'dropout': trained with its dropout active (models cached before were not).
      return (ddpm_cifar10_unet(num_classes, channels), {'model': 'ddpm-cifar10',
                                                         'dropout': 0.1},
              {'name': 'UNet2D', 'preset': 'ddpm-cifar10'})
    if self.model in ('ref-unet', 'ref-cifar10'):
      model = (reference_cifar10_unet(num_classes, channels) if self.model == 'ref-cifar10'
               else digits_reference_unet(num_classes, channels, self.channels[0], size))
      key = {'model': self.model, 'ch': model.ch, 'resolution': size}
      return model, key, {'name': 'RefDDPMUNet', 'preset': self.model, 'ch': model.ch}
    if self.model == 'dit':
      model = digits_dit(num_classes, channels, sample_size=size, size=self.dit_size)
      info = {'name': 'DiT', 'size': self.dit_size, 'time_freq_shift': model.time_freq_shift}
      return model, {'model': 'dit', 'size': self.dit_size,
                     'time_freq_shift': model.time_freq_shift}, info
    if self.model == 't2i':
      from jaxunlearn.diffusion.text import (HELD_OUT_TEMPLATES, TRAIN_TEMPLATES,
                                             digit_prompts, digits_text_to_image_model)
      model, _ = digits_text_to_image_model(digit_prompts(), tuple(self.channels),
                                            in_channels=channels)
      return model, {'model': 't2i', 'channels': list(self.channels),
                     'templates': list(TRAIN_TEMPLATES),
                     'held_out': list(HELD_OUT_TEMPLATES)}, {
                         'name': 'UNet2DCondition + CLIPTextEncoder',
                         'channels': list(self.channels), 'train_templates': list(TRAIN_TEMPLATES),
                         'held_out_templates': list(HELD_OUT_TEMPLATES)}
    # The UNet's key is what it was before DiT existed, so cached DDPMs stay valid.
    return (digits_unet(tuple(self.channels), num_classes, channels),
            {'channels': list(self.channels)},
            {'name': 'UNet2D', 'channels': list(self.channels)})

  def _replaced(self, which: str):
    """The ``ddpm`` or ``classifier`` settings in force: the field, the model's
    :data:`ORIGINAL_RECIPE` when the field is the default one, then ``overrides``."""
    base = getattr(self, which)
    recipe = {}
    if which == 'ddpm' and base == GenerationConfig.__dataclass_fields__['ddpm'].default:
      recipe = ORIGINAL_RECIPE.get(self.model, {})
    settings = {**recipe, **self.overrides.get(which, {})}
    return dataclasses.replace(base, **{k: cast_like(v, getattr(base, k), f'{which}.{k}')
                                        for k, v in settings.items()})


def load_original_ddpm(path, image_shape):
  """``(model, variables, description)`` of a pretrained class-conditional DDPM: a
  diffusers ``UNet2DModel`` folder, or a checkpoint of the references' DDPM code (a file,
  or a folder with ``ckpts/ckpt.pth``; its image side is the data's)."""
  path = Path(path)
  if path.is_dir() and ((path / 'config.json').is_file() or (path / 'unet').is_dir()):
    from jaxunlearn.convert import load_diffusers_unet
    unet, params = load_diffusers_unet(path)
    return unet, {'params': params}, {'name': 'UNet2D', 'pretrained': str(path)}
  from jaxunlearn.convert.ddim_unet import load_reference_ddpm
  unet, variables = load_reference_ddpm(path, resolution=image_shape[0])
  return unet, variables, {'name': 'RefDDPMUNet', 'pretrained': str(path), 'ch': unet.ch}


def fast_slow_every(hp) -> int | None:
  """K of a fast-slow method (SFR-on: its hyperparameters are :class:`SFRon`'s), else None."""
  from jaxunlearn.diffusion.methods import SFRon
  return hp.every if isinstance(hp, SFRon) else None


def iterations_done(updates: int, every: int | None) -> int:
  """Iterations completed after ``updates`` optimizer updates: SFR-on's fast-slow loop
  (``every`` = K) makes ``K + 1`` updates per ``K`` iterations, a forget step first; the
  other methods (``every=None``) one update per iteration."""
  if every is None:
    return updates
  return (updates // (every + 1)) * every + max(updates % (every + 1) - 1, 0)


class _Judge:
  """Classifies generated images: UA, accuracy and FID features, compiled once."""

  def __init__(self, model, variables, diffusion, config: GenerationConfig, image_shape,
               features, real_features, parallel: Parallel, prompts_of=None):
    self.model, self.variables, self.diffusion = model, variables, diffusion
    self.config, self.shape, self.parallel = config, image_shape, parallel
    self.features = features  # images in [-1, 1] -> [N, D] FID features
    self.real = real_features  # {class: features of its real training images}
    # class -> the condition ids its samples are drawn with (a text-to-image model: the
    # held-out captions naming it, in turn); None: the class id itself
    self.prompts_of = prompts_of

  def conditions(self, classes) -> np.ndarray:
    classes = np.asarray(classes, np.int32)
    if self.prompts_of is None:
      return classes
    ids = [self.prompts_of(int(c)) for c in classes]
    return np.asarray([p[i % len(p)] for i, p in enumerate(ids)], np.int32)

  def sample(self, unet, variables, labels, seed):
    """Samples of the classes ``labels`` (drawn with their conditions)."""
    return generate(unet, variables, self.diffusion, self.conditions(labels), self.shape, seed,
                    num_steps=self.config.sample_steps, guidance=self.config.guidance,
                    eta=self.config.sample_eta, clip=self.config.sample_clip,
                    parallel=self.parallel)

  def accuracy(self, images, labels) -> float:
    logits = predict(self.model, self.variables, images, parallel=self.parallel)
    return float(np.mean(np.argmax(logits, -1) == labels) * 100)

  def forget_scores(self, unet, variables, cls: int, seed: int) -> dict:
    """UA and FID_forget of ``forget_samples`` samples of the forgotten class ``cls``: a
    classifier can call noise or blobs a 3, their distance to the real 3s cannot hide it."""
    labels = np.full(self.config.forget_samples, cls, np.int32)
    images = self.sample(unet, variables, labels, seed + 1)
    return {'UA': 100.0 - self.accuracy(images, labels),
            'FID_forget': fid_from_features(self.features(images), self.real[cls])}

  def score(self, unet, variables, cls: int, num_classes: int, seed: int) -> dict:
    others = [c for c in range(num_classes) if c != cls]
    labels = np.repeat(np.asarray(others, np.int32), self.config.fid_samples_per_class)
    images = self.sample(unet, variables, labels, seed + 2)
    fake = self.features(images)
    real = np.concatenate([self.real[c] for c in others])
    return {**self.forget_scores(unet, variables, cls, seed),
            'FID': fid_from_features(fake, real),
            'acc_remaining': self.accuracy(images, labels)}


class ForgetTracker:
  """Callback: UA and FID_forget of the forgotten class every ``every`` updates (its time
  not counted in the method's run time); resumable (``state_dict``)."""

  def __init__(self, judge: _Judge, unet, cls: int, seed: int, hp, every: int = 0):
    self.judge, self.unet, self.cls, self.seed, self.hp = judge, unet, cls, seed, hp
    self.every = every
    self.iterations, self.ua, self.fid_forget, self.seconds = [], [], [], 0.0

  def start_at(self, original: dict) -> None:
    """The curve's first point: the original's scores at iteration 0."""
    self.iterations, self.ua = [0], [original['UA']]
    self.fid_forget = [original.get('FID_forget')]

  def __call__(self, updates: int, variables) -> None:
    start = time.perf_counter()
    scores = self.judge.forget_scores(self.unet, variables, self.cls, self.seed)
    self.iterations.append(iterations_done(updates, fast_slow_every(self.hp)))
    self.ua.append(scores['UA'])
    self.fid_forget.append(scores['FID_forget'])
    self.seconds += time.perf_counter() - start

  def state_dict(self) -> dict:
    return {'iterations': self.iterations, 'ua': self.ua, 'fid_forget': self.fid_forget,
            'seconds': self.seconds}

  def load_state_dict(self, state: dict) -> None:
    self.iterations, self.ua = list(state['iterations']), list(state['ua'])
    # A run checkpointed before FID_forget was tracked: None where it was not measured.
    self.fid_forget = list(state.get('fid_forget', [None] * len(self.ua)))
    self.seconds = state['seconds']

  def steps_to_forget(self):
    return next((i for i, ua in zip(self.iterations, self.ua) if ua >= FORGOTTEN), None)

  def report(self) -> dict:
    """The fields it adds to the method's row."""
    return {'steps_to_forget': self.steps_to_forget(),
            'curve': {'iterations': list(self.iterations), 'UA': list(self.ua),
                      'FID_forget': list(self.fid_forget)}}


def _updates_per(check_every: int, every: int | None) -> int:
  """Optimizer updates in ``check_every`` iterations (SFR-on: ``K + 1`` per ``K``)."""
  if not check_every:
    return 0
  return -(-check_every * (every + 1) // every) if every is not None else check_every


class _SeedRun(SeedRun):
  """One seed of a generation run: its original DDPM, its task, and the judge's scores (the
  first seed also keeps its sample grids, for samples.png)."""

  def __init__(self, job: GenerationJob, seed: int, task: GenerationTask, seconds: float,
               original_key: str | None = None):
    self.job, self.seed, self.task, self.train_seconds = job, seed, task, seconds
    self.original_key = original_key

  def _keep_grid(self, name: str, variables) -> None:
    if self.seed == self.job.config.seeds[0] and self.job.out_dir is not None:
      self.job.out_dir.mkdir(parents=True, exist_ok=True)
      np.save(self.job.out_dir / f'grid-{name}.npy', _grid(
          self.job.judge, self.task.model, variables, self.job.ds.num_classes, self.seed))

  def _scores(self, variables) -> dict:
    return self.job.judge.score(self.task.model, variables, self.job.cls,
                                self.job.ds.num_classes, self.seed)

  def original(self) -> dict:
    self._keep_grid('original', self.task.variables)
    return dict(self._scores(self.task.variables), train_s=self.train_seconds)

  def monitor(self, name: str, hp, original: dict) -> ForgetTracker:
    tracker = ForgetTracker(self.job.judge, self.task.model, self.job.cls, self.seed, hp,
                            every=_updates_per(self.job.config.check_every,
                                               fast_slow_every(hp)))
    tracker.start_at(original)
    return tracker

  def score(self, name: str, variables) -> dict:
    self._keep_grid(name, variables)
    return self._scores(variables)


class GenerationJob(Job):
  """The generation job's plug-in into :func:`jaxunlearn.job.run_job`; the data, models and
  classifier are made when a seed or the results first need them (or :meth:`prepare`).

  A study of the job's own originals uses it directly (``experiments/dit_training.py``):
  :meth:`original` trains or reads a seed's original as a run does, :meth:`score` scores
  weights as a run scores its original; after :meth:`prepare`, ``ds`` is the data,
  ``unet`` the denoiser, ``ddpm`` the resolved training recipe and ``cls`` the class a run
  forgets."""

  registry = GENERATION_METHODS

  def __init__(self, config: GenerationConfig, out_dir):
    config.validate()
    self.config, self.out_dir = config, None if out_dir is None else Path(out_dir)
    self.cls = int(parse_scenario(config.scenario).value)
    self.ddpm, self.clf_cfg = config._replaced('ddpm'), config._replaced('classifier')
    self._resolved = config.method_hparams()  # checked before any compute
    self._ready = False

  def hparams(self, progress) -> dict:
    return self._resolved

  def prepare(self) -> None:
    """Loads the data, makes the denoiser and the judge (training or reading its cached
    classifier); once."""
    if self._ready:
      return
    config, parallel = self.config, self.config.devices()
    self.ds = ds = config.load_data()
    self.unet, self.model_key, self.model_info = config.denoiser(ds.num_classes,
                                                                 ds.image_shape)
    self.pretrained = None
    if config.unet_path is not None:
      self.unet, self.pretrained, self.model_info = load_original_ddpm(
          config.unet_path, ds.image_shape)
    clf = make_model('resnet18', ds.num_classes, config.classifier_width)
    self.data_key = {'dataset': config.dataset, 'image_size': ds.image_shape[0],
                     'pixels': 'symmetric'}
    clf_vars, self.clf_info = checkpoint.cached(
        config.cache_dir, 'genclassifier',
        {**self.data_key, 'width': config.classifier_width,
         'train': dataclasses.asdict(self.clf_cfg)},
        lambda: train_classifier(clf, ds.x_train, ds.y_train, self.clf_cfg, 0,
                                 desc='classifier', progress=config.progress))
    self.test_acc = float(np.mean(np.argmax(predict(clf, clf_vars, ds.x_test,
                                                    parallel=parallel), -1)
                                  == ds.y_test) * 100)
    if config.fid_inception is None:
      features = functools.partial(predict, clf, clf_vars, parallel=parallel, features=True)
    else:
      inception = InceptionFeatures.from_file(config.fid_inception, parallel=parallel)
      features = lambda x: inception((x + 1) / 2)  # noqa: E731  [-1, 1] -> [0, 1]
    real = {c: features(ds.x_train[ds.y_train == c][:config.fid_real_per_class])
            for c in range(ds.num_classes)}
    prompts_of = None
    if config.model == 't2i':
      from jaxunlearn.diffusion.text import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, caption_ids
      first = len(TRAIN_TEMPLATES)  # the held-out captions follow the training ones
      held_out = range(first, first + len(HELD_OUT_TEMPLATES))
      prompts_of = lambda c: caption_ids([c], held_out, ds.num_classes)  # noqa: E731
    self.judge = _Judge(clf, clf_vars, self.ddpm, config, ds.image_shape, features, real,
                        parallel, prompts_of)
    self._ready = True

  def original(self, seed: int, x_train, y_train, callback=None, callback_every: int = 0):
    """``(variables, cache info)`` of the seed's original: given, read from the cache, or
    trained on ``x_train, y_train`` (``callback(step, variables)`` every ``callback_every``
    steps of a training, as :func:`jaxunlearn.train.fit`'s)."""
    self.prepare()
    if self.pretrained is not None:
      return self.pretrained, {'seconds': 0.0}
    config = self.config
    return checkpoint.cached(
        config.cache_dir, 'ddpm',
        {**self.data_key, **self.model_key, 'train': self.ddpm.cache_dict(), 'seed': seed},
        lambda ckpt=None: train_diffusion(
            self.unet, x_train, y_train, self.ddpm, seed,
            desc=f'{self.model_info["name"]} DDPM (seed {seed})', progress=config.progress,
            control=LoopControl(ckpt, config.max_nonfinite), parallel=config.devices(),
            callback=callback, callback_every=callback_every)[0],
        checkpoint_every=config.checkpoint_every)

  def score(self, variables, seed: int) -> dict:
    """UA and FID_forget of the forgotten class, FID and acc_remaining of the others, as a
    run scores its original: the job's sampler and classifier, ``variables`` of the job's
    denoiser (``unet``), the sampler's noise from ``seed``."""
    self.prepare()
    scores = self.judge.score(self.unet, variables, self.cls, self.ds.num_classes, seed)
    return {k: float(v) for k, v in scores.items()}

  def seed(self, seed: int) -> _SeedRun:
    self.prepare()
    config, ds, unet = self.config, self.ds, self.unet
    split = make_split(ds, config.scenario, seed)
    x_train, y_train = ds.x_train, ds.y_train
    if config.model == 't2i':  # every image under every training caption of its digit
      from jaxunlearn.diffusion.text import TRAIN_TEMPLATES, caption_ids
      k = len(TRAIN_TEMPLATES)
      x_train = np.concatenate([ds.x_train] * k)
      y_train = caption_ids(ds.y_train, range(k), ds.num_classes)
      n = len(ds.y_train)
      split = dataclasses.replace(split, **{
          part: np.concatenate([getattr(split, part) + t * n for t in range(k)])
          for part in ('forget', 'retain')})
    original, info = self.original(seed, x_train, y_train)
    num_conditions, concept = ds.num_classes, None
    if config.model == 't2i':  # unlearning changes the UNet alone, as on Stable Diffusion
      from jaxunlearn.diffusion.text import concept_templates, freeze_text
      unet, original = freeze_text(unet, original)
      num_conditions = unet.num_prompts - 1
      # ESD's prompt is the concept alone ("three", "3"), not a caption around it
      concept = caption_ids([self.cls], concept_templates(), ds.num_classes)
    task = GenerationTask(unet, original, x_train[split.forget], y_train[split.forget],
                          x_train[split.retain], y_train[split.retain], num_conditions,
                          self.ddpm, seed, config.progress, parallel=config.devices(),
                          concept_y=concept)
    return _SeedRun(self, seed, task, info['seconds'], info.get('key'))

  def results(self, per_seed: dict, originals: list, hparams: dict) -> dict:
    self.prepare()
    return _results(self.config, per_seed, originals, hparams, self.ddpm, self.clf_cfg,
                    self.test_acc, self.clf_info, self.cls, self.model_info,
                    self.ds.image_shape)

  def write(self, results: dict, out: Path) -> None:
    from jaxunlearn.diffusion.report import plot_forgetting, plot_generation, plot_samples
    names = ['original', *self.config.methods]
    grids = {n: np.load(out / f'grid-{n}.npy') for n in names
             if (out / f'grid-{n}.npy').is_file()}
    checkpoint.write_json_atomic(out / 'results.json', results)
    plot_generation(results, out / 'results.png')
    plot_forgetting(results, out / 'forgetting.png')
    plot_samples(grids, self.cls, out / 'samples.png', GRID_PER_CLASS)
    for name in names:
      (out / f'grid-{name}.npy').unlink(missing_ok=True)


def run_generation(config: GenerationConfig, out_dir: str | Path | None = None,
                   restart: bool = False) -> dict:
  """Runs the generation protocol; writes results.json, results.png, forgetting.png and
  samples.png to ``out_dir``. The seed x method loop is the shared
  :func:`jaxunlearn.job.run_job` (resumable like
  :func:`jaxunlearn.experiment.run_experiment`)."""
  return run_job(GenerationJob(config, out_dir), out_dir, restart)


def generation_task(config: GenerationConfig, seed: int) -> tuple[GenerationTask, str | None]:
  """The task a generation run of ``config`` gives its methods on ``seed`` (its original
  trained, or loaded from ``config.cache_dir``, and its split), and the original's cache
  key (``None`` for a model given ready-made): for studying a method's statistics on the
  run's own originals."""
  run = GenerationJob(config, None).seed(seed)
  return run.task, run.original_key


def _grid(judge: _Judge, unet, variables, num_classes: int, seed: int) -> np.ndarray:
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), GRID_PER_CLASS)
  return judge.sample(unet, variables, labels, seed + 3)


def _results(config, per_seed, originals, hparams, ddpm, clf_cfg, test_acc, clf_info, cls,
             model_info, image_shape) -> dict:

  def summary(rows):
    rows = [r for r in rows if 'error' not in r]
    out = {}
    for k in REPORTED:
      values = [r[k] for r in rows if r.get(k) is not None]
      if values:
        out[k] = summarize(values)
    if rows and 'steps_to_forget' in rows[0]:
      out['forgotten_runs'] = sum(r['steps_to_forget'] is not None for r in rows)
    return out

  results = {
      'task': 'generation',
      'dataset': config.dataset,
      'scenario': config.scenario,
      'forget_class': cls,
      'seeds': list(config.seeds),
      'model': {**model_info, 'image_shape': list(image_shape)},
      'methods': {n: summary(rows) for n, rows in per_seed.items()},
      'original': summary(originals),
      'original_per_seed': originals,
      'per_seed': per_seed,
      'hparams': {**{n: hp.to_dict() for n, hp in hparams.items()}, 'ddpm': dataclasses.asdict(ddpm),
                  'classifier': dataclasses.asdict(clf_cfg)},
      'classifier': {'test_accuracy': test_acc, 'train_s': clf_info['seconds']},
      'evaluation': {'forget_samples': config.forget_samples,
                     'fid_samples_per_class': config.fid_samples_per_class,
                     'fid_real_per_class': config.fid_real_per_class,
                     'fid_features': 'classifier' if config.fid_inception is None
                                     else 'inception',
                     'sample_steps': config.sample_steps, 'sample_eta': config.sample_eta,
                     'sample_clip': config.sample_clip, 'guidance': config.guidance,
                     'check_every': config.check_every, 'forgotten_at_UA': FORGOTTEN},
      'metrics_doc': 'UA: 100 - classifier accuracy (percent) on samples of the forgotten '
                     'class; FID_forget: Frechet distance between the fid_features of those '
                     'samples and of the real images of the forgotten class (higher: less '
                     'like it); FID: Frechet distance between the fid_features (classifier or '
                     'Inception pool-3) of samples of the remaining classes and of their '
                     'real training images; '
                     'acc_remaining: classifier accuracy on those samples; steps_to_forget: '
                     'first checked iteration with UA >= 95 (forgotten_runs: seeds that got '
                     'there); rte_s: seconds of unlearning, checks excluded; std over seeds',
  }
  return results
