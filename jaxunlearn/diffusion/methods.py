"""Forgetting a class of a class-conditional DDPM (or a concept of a prompt-conditioned
text-to-image model): SalUn, SFR-on, LUR, SA, GA, ESD.

A registry like the classification one (:mod:`jaxunlearn.methods`): each method is
``fn(task: GenerationTask, hp) -> variables`` with its typed hyperparameters (a frozen
dataclass, :mod:`jaxunlearn.hparams`), resolved and checked by the same
``resolve_hparams(name, overrides, GENERATION_METHODS)``, and runs on the shared
loops and statistics with the task's denoising objectives, on the task's devices. Defaults are the DDPM
reference codes' (CIFAR-10, 3x32x32): Adam lr 1e-4, batch 128, gradients clipped to global
norm 1, label dropout 0.1 on retain losses. What differs is said in each method.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxunlearn.diffusion.objectives import (ESD_ORIGINAL, AdaptiveDenoisingAscent, Denoising,
                                             ErasedStableDiffusion, HybridDenoising,
                                             RemappedClass)
from jaxunlearn.diffusion.unlearn import GenerationTask, elbo_fisher, generate
from jaxunlearn.hparams import (Hyperparameters, at_least_one, fraction, hparam, non_negative,
                                one_of, positive, probability)
from jaxunlearn.methods import register
from jaxunlearn.optim import OptimSpec
from jaxunlearn.saliency import fisher_diagonal, fisher_ratio_mask, salun_mask
from jaxunlearn.train import Phase, fit, fit_fast_slow, fit_joint

GENERATION_METHODS: dict = {}


@dataclasses.dataclass(frozen=True)
class Adam(Hyperparameters):
  """The DDPM references' Adam (PyTorch defaults, no weight decay), clipped."""

  lr: float = positive(1e-4, 'learning rate')
  batch_size: int = at_least_one(128, 'examples per batch of each set')
  clip_norm: float = non_negative(1.0, 'global-norm clip of every update (0: none)')
  cond_drop_prob: float = probability(0.1, 'label dropout of the retain denoising loss')

# SalUn's reference weighs a per-pixel *mean* forget loss against its alpha = 1e-3 times a
# per-image *sum* retain loss over 3x32x32 = 3072 pixels: a balance of 3.072 per pixel,
# which would change with the image size. We weigh two per-pixel means by that 3.072.
_SALUN_ALPHA = 1e-3 * 3 * 32 * 32


def _retain_loss(task: GenerationTask, hp: Adam, **options) -> Denoising:
  return Denoising(cond_drop_prob=hp.cond_drop_prob, null_class=task.null_class, **options)


def _adam(hp: Adam, **options) -> OptimSpec:
  """The references' Adam (PyTorch defaults), no weight decay, clipped to ``clip_norm``."""
  return OptimSpec('adam', hp.lr, momentum=0.9, weight_decay=0.0, clip_norm=hp.clip_norm,
                   **options)


def _loop(task: GenerationTask, hp, desc: str) -> dict:
  return dict(batch_size=hp.batch_size, **task.loop(desc))


def _statistic_args(task: GenerationTask, hp) -> dict:
  """How both DDPM references read gradients for masks and Fishers: the conditional
  denoising loss at the original model, each batch gradient clipped to global norm 1."""
  return dict(batch_size=hp.batch_size, clip_norm=1.0, parallel=task.parallel)


@dataclasses.dataclass(frozen=True)
class SalUn(Adam):
  steps: int = at_least_one(1000, 'joint steps')
  keep: float = fraction(0.5, 'share of the weights updated (the most salient)')
  retain_weight: float = non_negative(
      _SALUN_ALPHA, "weight of the retain loss (denoising, the reference's alpha per pixel)")
  renamed = {'alpha': 'retain_weight'}


@register('salun', 'SalUn: remap the class to (c+1) mod C, w_r * denoising on D_r, masked '
          'to the top-`keep` salient weights', SalUn, registry=GENERATION_METHODS)
def salun(task: GenerationTask, hp: SalUn):
  """SalUn for diffusion (arXiv 2310.12508, section 5): mask = top ``keep`` of |sum of
  clipped batch gradients of the denoising loss on D_f|; then joint steps on
  ``MSE(eps(x_t, t, c_f), sg(eps(x_t, t, c'))) + w_r L_diff(D_r)`` (``retain_weight``),
  clipped to 1,
  masked, Adam."""
  mask = salun_mask(task.statistic(Denoising()), task.variables, task.forget_x, task.forget_y,
                    hp.keep, **_statistic_args(task, hp))
  variables, _ = fit_joint(
      task.variables, task.forget_phase(RemappedClass(task.num_classes)),
      task.retain_phase(_retain_loss(task, hp, reduction='mean')), steps=hp.steps,
      optim=_adam(hp, saliency=True, forget_weight=1.0, retain_weight=hp.retain_weight),
      mask=mask, **_loop(task, hp, 'salun'))
  return variables


@dataclasses.dataclass(frozen=True)
class SFRon(Adam):
  iterations: int = at_least_one(150, 'iterations T, a retain step each')
  every: int = at_least_one(1, 'K: a forget step every K-th iteration')
  forget_weight: float = non_negative(
      10.0, "weight of the forget loss (at t = 0, cosine-decayed over T: the reference's alpha)")
  retain_weight: float = non_negative(
      1.0, "weight of the retain loss (denoising, the reference's remain_alpha)")
  lam: float = non_negative(0.5, "the adaptive ascent loss's temperature lambda")
  gamma: float = positive(1.0, 'Fisher-ratio threshold of the mask (F_f / F_r >= gamma)')
  mask: bool = hparam(True, doc='mask forget steps by the Fisher ratio')
  # Both references compute the forget loss in training mode, so 10% of the forget batch
  # is ascended under the null label, on the unconditional model that guidance subtracts
  # for every class. Kept (the default is theirs); 0 ascends the labelled model only. On
  # the digits DDPM neither is kinder to the other classes (docs/generation.md).
  forget_cond_drop_prob: float = probability(
      0.1, 'label dropout of the forget loss: the share of forget examples ascended as the '
      "null class, on the unconditional model every class's guidance uses (the references' "
      "training default; forget_loss='remap' drops no label)")
  # What SFR-on's DDPM, DiT and Stable Diffusion codes do differently (DIT_RECIPE sets the
  # DiT code's; SD_SETTINGS and T2I_RECIPE the SD code's):
  loss: str = one_of(('ddpm', 'hybrid', 'mean'), 'ddpm', "denoising loss: the DDPM code's "
                     "pixel sum, DiT's hybrid loss (pixel mean + variational term), or the "
                     "pixel mean (the SD code's latent diffusion loss)")
  forget_loss: str = one_of(('adaptive', 'ga', 'remap'), 'adaptive', 'forget loss: the '
                            'adaptive weighting (lam; DDPM code), plain ascent on the mean '
                            "(DiT code), or no ascent: SalUn's pseudo-prompt loss, the "
                            'concept denoised like the next prompt (SD code)')
  forget_schedule: str = one_of(('cosine', 'constant'), 'cosine',
                                'forget_weight over the iterations (the DiT code: constant)')
  retain_clip: bool = hparam(True, doc='clip the retain update to clip_norm as well (DDPM '
                             'code; the DiT code clips only the forget update)')
  fisher_batch_size: int = non_negative(0, "batch of each Fisher gradient of the mask (0: "
                                        "batch_size; the DiT code: 1)")
  fisher_clip: bool = hparam(True, doc='clip each Fisher batch gradient to norm 1 (DDPM '
                             'code; not the DiT code)')
  fisher_examples: int = non_negative(0, 'examples of each set behind the Fisher, drawn '
                                      'at random (0: all; the DiT code: 2000 batches)')
  renamed = {'alpha': 'forget_weight', 'remain_alpha': 'retain_weight'}


# SFR-on's DiT code (K1nght/Unified-Unlearning-w-Remain-Geometry DiT/forget.py, README
# command; DiT/generate_fisher.py): gradient ascent on the mean hybrid loss, alpha 1e-3
# constant (--decay-forget-alpha is parsed but never read), the forget update masked and
# clipped to 1, the retain update neither; the Fisher from unclipped gradients of batches
# of one image (--batch-size default 1) over --n-iters 2000 draws, in eval mode; 600
# iterations (the README's command). The generation job applies these defaults to `sfron`
# when the model is a DiT (GenerationConfig.method_overrides); --set overrides them.
DIT_RECIPE = {'sfron': {'iterations': 600, 'loss': 'hybrid', 'forget_loss': 'ga',
                        'forget_weight': 1e-3,
                        'forget_schedule': 'constant', 'retain_clip': False,
                        'fisher_batch_size': 1, 'fisher_clip': False,
                        'fisher_examples': 2000}}


# SFR-on's Stable Diffusion code (its SD/train-scripts/nsfw_removal.py): SalUn's
# pseudo-prompt loss instead of ascent, pixel means, forget_alpha 1, constant. erase-sd
# (SD_SETTINGS) and the digits text-to-image job (T2I_RECIPE) run SFR-on with these.
SFRON_SD_LOSSES = {'forget_loss': 'remap', 'loss': 'mean', 'forget_weight': 1.0,
                   'forget_schedule': 'constant'}


# The digits text-to-image job's recipe (--task text-to-image; --set overrides it). ESD:
# train-esd.py's 1000 iterations are an 860M-parameter Stable Diffusion's; the digits model
# has forgotten "three" by about iteration 550, and each iteration after that costs the other
# digits (seed 0, 2026-12-05: UA 98 / acc_remaining 64.2 after 600 iterations, UA 100 / 53.1
# after 1000, original 66.7). SalUn and LUR: the DDPM's 1000 joint steps are ten times what
# the digits model needs; seed 0 has forgotten by step 50 (SalUn) and 40 (LUR) and keeps the
# other digits at 100 steps (2026-12-05, original 70.9: SalUn UA 99 / 69.1, LUR 100 / 66.4;
# SalUn after 1000 steps: 54.2), so both stop at 100. SFR-on: its Stable Diffusion code's
# losses (SD_SETTINGS in stable_diffusion.py: SalUn's pseudo-prompt loss instead of ascent,
# pixel means, weights 1, constant), 80 iterations: seed 0 UA 100 / acc_remaining 71.3,
# forgotten at 30; its DDPM code's ascent costs the other digits 14-20 points whatever the
# iterations, rate or weight (docs/stable-diffusion.md).
T2I_RECIPE = {'esd': {'steps': 600}, 'salun': {'steps': 100}, 'lur': {'steps': 100},
              'sfron': {'iterations': 80, **SFRON_SD_LOSSES}}


@dataclasses.dataclass(frozen=True)
class SFRonFastSlow(SFRon):
  pass


@register('sfron', 'SFR-on: adaptive-weighted masked ascent on the denoising loss, retain '
          'descent, every iteration (fast-slow, K=1)', SFRonFastSlow,
          registry=GENERATION_METHODS)
def sfron(task: GenerationTask, hp: SFRonFastSlow):
  """SFR-on for DDPM (arXiv 2409.19732; its ``sfron_forget``, method 'ron', loss 'adaga'):
  Fisher-ratio mask from the denoising loss; each iteration an ascent step on the adaptive
  weighted loss (``lam``) scaled by the cosine-decayed ``forget_weight``, masked, clipped,
  then a descent step on ``retain_weight`` L_diff(D_r), clipped; one Adam state for both.
  On a DiT, the job's defaults are its DiT code's (:data:`DIT_RECIPE`); on a text-to-image
  model its Stable Diffusion code's (``forget_loss='remap'``: SalUn's pseudo-prompt loss
  instead of ascent, :data:`T2I_RECIPE`)."""
  return _sfron(task, hp, 'sfron')


def _fisher_subset(x, y, n: int, seed: int):
  if not n or len(y) <= n:
    return x, y
  idx = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False))
  return x[idx], y[idx]


def sfron_fishers(task: GenerationTask, hp: SFRon, forget=None, retain=None):
  """The forget and the retain set's diagonal Fishers behind SFR-on's mask (``hp``'s loss,
  batches, clipping and subsets; eval mode, conditional loss: the references'
  ``generate_fisher``); ``forget`` / ``retain``: ``(x, y)`` in place of the task's sets (to
  study the mask). The mask is ``fisher_ratio_mask(*sfron_fishers(task, hp), hp.gamma)``."""
  forget = _fisher_subset(*(forget or (task.forget_x, task.forget_y)), hp.fisher_examples,
                          task.seed)
  retain = _fisher_subset(*(retain or (task.retain_x, task.retain_y)), hp.fisher_examples,
                          task.seed + 1)
  statistic = task.statistic(HybridDenoising() if hp.loss == 'hybrid' else Denoising())
  fisher = lambda x, y: fisher_diagonal(  # noqa: E731
      statistic, task.variables, x, y, hp.fisher_batch_size or hp.batch_size,
      1.0 if hp.fisher_clip else 0.0, task.parallel)
  return fisher(*forget), fisher(*retain)


def _sfron(task: GenerationTask, hp: SFRon, desc: str, **precondition):
  hybrid, reduction = hp.loss == 'hybrid', 'mean' if hp.loss == 'mean' else 'sum'
  mask = fisher_ratio_mask(*sfron_fishers(task, hp), hp.gamma) if hp.mask else None
  optim = OptimSpec('adam', hp.lr, momentum=0.9, weight_decay=0.0,
                    clip_norm=hp.clip_norm if hp.retain_clip else 0.0, every=hp.every,
                    forget_weight=hp.forget_weight, forget_schedule=hp.forget_schedule,
                    forget_clip_norm=hp.clip_norm, saliency=hp.mask, **precondition)
  drop = dict(cond_drop_prob=hp.cond_drop_prob, null_class=task.null_class)
  forget_drop = dict(drop, cond_drop_prob=hp.forget_cond_drop_prob)
  if hp.forget_loss == 'adaptive':
    forget = AdaptiveDenoisingAscent(hp.lam, hybrid=hybrid, **forget_drop)
  elif hp.forget_loss == 'remap':  # SD/train-scripts/nsfw_removal.py's forget stage
    forget = RemappedClass(task.num_classes)
  else:
    forget = (HybridDenoising(-1.0, **forget_drop) if hybrid
              else Denoising(-1.0, **forget_drop, reduction=reduction))
  retain = (HybridDenoising(hp.retain_weight, **drop) if hybrid
            else _retain_loss(task, hp, scale=hp.retain_weight, reduction=reduction))
  variables, _ = fit_fast_slow(
      task.variables, task.forget_phase(forget), task.retain_phase(retain),
      iterations=hp.iterations, optim=optim, mask=mask, **_loop(task, hp, desc))
  return variables


@dataclasses.dataclass(frozen=True)
class SFRonHVP(SFRon):
  precondition: str = one_of(('none', 'cg', 'neumann'), 'cg', 'solver of (H_r + damping I)^-1')
  damping: float = positive(1.0, 'damping of the remain Hessian')
  solver_iters: int = at_least_one(3, 'CG or Neumann iterations (Hessian-vector products)')
  recompute: bool = hparam(True, doc='recompute the remain pass in every product')


@register('sfron_hvp', 'SFR-on with the explicit remain-Hessian preconditioner on each forget '
          'step (CG on H_r + damping I of the retain denoising loss)', SFRonHVP,
          registry=GENERATION_METHODS)
def sfron_hvp(task: GenerationTask, hp: SFRonHVP):
  """SFR-on as :func:`sfron`, each forget direction first filtered by
  ``damping (H_r + damping I)^-1`` with ``solver_iters`` Hessian-vector products of the
  retain denoising loss on the iteration's retain batch (``precondition_by_remain_hessian``;
  ``recompute``: each product recomputes the pass instead of storing its linearisation,
  which with ``DiT(remat=True, scan_blocks=True)`` keeps DiT-XL/2 at batch 32 near 26 GiB)."""
  return _sfron(task, hp, 'sfron_hvp', precondition=hp.precondition, damping=hp.damping,
                solver_iters=hp.solver_iters, recompute=hp.recompute)


@dataclasses.dataclass(frozen=True)
class LUR(Adam):
  steps: int = at_least_one(1000, 'joint steps')
  inner_lr: float = non_negative(0.01, 'eta: the look-ahead step on the retain loss')
  order: str = one_of(('first', 'second'), 'first', "the look-ahead's derivative")
  virtual: str = one_of(('retain', 'forget'), 'retain', 'which loss the virtual step takes')
  forget_loss: str = one_of(('rl', 'ga'), 'rl', 'L_U: remapped class or gradient ascent')
  forget_weight: float = non_negative(1.0, 'weight of the forget loss (w_u)')
  retain_weight: float = non_negative(_SALUN_ALPHA, 'weight of the retain loss (w_r)')


@register('lur', "LUR: joint steps on w_r L_R(theta) + w_u L_U(theta - eta grad L_R(theta)) "
          'with the diffusion losses', LUR, registry=GENERATION_METHODS)
def lur(task: GenerationTask, hp: LUR):
  """LUR (arXiv 2503.06339) on SalUn's diffusion losses: L_U the remapped-class loss
  ('rl') or gradient ascent on the denoising loss ('ga'), L_R the retain denoising loss
  (per-pixel mean, weighted as SalUn's retain_weight); ``align_forget_retain`` makes the look-ahead
  step, then clip and Adam. First order by default (the HVP of 'second' doubles a step)."""
  forget = (RemappedClass(task.num_classes) if hp.forget_loss == 'rl' else
            Denoising(-1.0, hp.cond_drop_prob, task.null_class, reduction='mean'))
  optim = _adam(hp, forget_weight=hp.forget_weight, retain_weight=hp.retain_weight,
                lookahead_lr=hp.inner_lr, lookahead_order=hp.order,
                lookahead_virtual=hp.virtual)
  variables, _ = fit_joint(
      task.variables, task.forget_phase(forget),
      task.retain_phase(_retain_loss(task, hp, reduction='mean')), steps=hp.steps,
      optim=optim, **_loop(task, hp, 'lur'))
  return variables


@dataclasses.dataclass(frozen=True)
class SA(Adam):
  cond_drop_prob: float = probability(0.0, 'label dropout of the replay loss')
  steps: int = at_least_one(1000, 'joint steps')
  strength: float = non_negative(10.0, 'weight of the penalty (EWC, the reference\'s lambda)')
  replay_weight: float = non_negative(1.0, 'weight of the replay loss')
  replay_per_class: int = at_least_one(50, 'samples of each class replayed')
  fisher_timesteps: int = at_least_one(20, 'timesteps of the ELBO Fisher per image')
  sample_steps: int = at_least_one(50, 'DDIM steps of the replay samples')
  guidance: float = non_negative(2.0, 'classifier-free guidance of the replay samples')


@register('sa', 'Selective Amnesia: forget class -> uniform noise, generative replay of the '
          'others, EWC to the original', SA, registry=GENERATION_METHODS)
def sa(task: GenerationTask, hp: SA):
  """Selective Amnesia (Heng & Soh, arXiv 2305.10120; DDPM code in both references):
  ``replay_per_class`` samples of every class from the original model (DDIM, guidance);
  the diagonal Fisher of the ELBO on them; then joint steps on ``L(noise images, c_f) +
  replay_weight L(replay of the other classes)`` plus ``strength * sum F (theta -
  theta0)^2`` (``add_elastic_penalty``), clipped, Adam. The reference replays 500 images
  per class and trains 20000 steps; labels are never dropped (its ``cond_drop_prob=0``).

  "Every class" is every condition the training sets hold: on a class-conditional model all
  classes; on a prompt model its training captions, never a held-out caption (replaying the
  original's images of a held-out caption of the forgotten digit would train the concept
  back in where it is judged)."""
  shape = task.forget_x.shape[1:]
  trained = np.unique(np.concatenate([task.forget_y, task.retain_y])).astype(np.int32)
  labels = np.repeat(trained, hp.replay_per_class)
  samples = generate(task.model, task.variables, task.diffusion, labels, shape, task.seed,
                     num_steps=hp.sample_steps, guidance=hp.guidance, parallel=task.parallel)
  fisher = elbo_fisher(task, samples, labels, hp.fisher_timesteps, seed=task.seed)
  keep = ~np.isin(labels, np.unique(task.forget_y))
  replay = task.phase(samples[keep], labels[keep], _retain_loss(task, hp), 'retain')
  optim = _adam(hp, forget_weight=1.0, retain_weight=hp.replay_weight,
                elastic=hp.strength)
  variables, _ = fit_joint(task.variables, task.forget_phase(Denoising(surrogate=True)),
                           replay, steps=hp.steps, optim=optim, fisher=fisher,
                           **_loop(task, hp, 'sa'))
  return variables


@dataclasses.dataclass(frozen=True)
class GA(Adam):
  steps: int = at_least_one(200, 'ascent steps')


@register('ga', 'Gradient ascent on the denoising loss of D_f', GA, registry=GENERATION_METHODS)
def ga(task: GenerationTask, hp: GA):
  """``-L_diff(D_f)`` (summed over pixels, labels dropped as in training), clipped, Adam:
  forgets, and with nothing holding the rest in place, degrades every class."""
  loss = Denoising(-1.0, hp.cond_drop_prob, task.null_class)
  variables, _ = fit(task.variables, [task.forget_phase(loss)], steps=hp.steps,
                     optim=_adam(hp), **_loop(task, hp, 'ga'))
  return variables


# ESD's parameter subsets (train-esd.py's train_method, on diffusers' names): 'xattn' the
# cross-attention layers (attn2) only, for styles; 'noxattn' every layer but those, the
# time embedding and the output layers (the LDM 'out.' ones), for objects and nudity (the
# ESD paper's ESD-u); 'full' everything.
ESD_SUBSETS = ('xattn', 'noxattn', 'full')


def esd_mask(params, subset: str):
  """The 0/1 tree of the weights ESD's ``subset`` trains (see :data:`ESD_SUBSETS`)."""
  def keep(path, leaf):
    name = '/'.join(str(getattr(p, 'key', p)) for p in path)
    if subset == 'full':
      on = True
    elif subset == 'xattn':
      on = 'attn2' in name
    else:
      on = not any(s in name for s in ('attn2', 'time_embedding', 'conv_norm_out', 'conv_out'))
    return np.full(np.shape(leaf), on, np.float32)
  mask = jax.tree_util.tree_map_with_path(keep, params)
  if not any(np.any(m) for m in jax.tree.leaves(mask)):
    raise ValueError(f"ESD's {subset!r} subset selects no weight of this model (no "
                     "cross-attention layers?): use 'noxattn' or 'full'")
  return mask


@dataclasses.dataclass(frozen=True)
class ESD(Hyperparameters):
  lr: float = positive(1e-5, 'learning rate (Adam)')
  steps: int = at_least_one(1000, 'steps (the reference\'s iterations)')
  batch_size: int = at_least_one(1, 'concept samples per step (the reference: 1)')
  negative_guidance: float = non_negative(1.0, 'eta: how far the target is pushed away from '
                                          'the concept')
  start_guidance: float = non_negative(3.0, 'guidance of the sampling that makes z')
  ddim_steps: int = at_least_one(50, 'DDIM steps of that sampling')
  train_method: str = one_of(ESD_SUBSETS, 'noxattn', 'the weights trained (ESD-u: noxattn)')
  renamed = {'iterations': 'steps'}


@register('esd', "ESD: the concept's prediction regressed onto the original's guidance away "
          'from it, on latents the model samples itself', ESD, registry=GENERATION_METHODS)
def esd(task: GenerationTask, hp: ESD):
  """Erased Stable Diffusion (Gandikota et al. 2023; SalUn's ``SD/train-esd.py``): for
  ``steps`` steps, ``z`` sampled by the current model toward the concept (the prompts
  naming it alone, ``task.concept_y``, else the forget labels) until a random DDIM step, the model's ``eps(z, t, c)``
  regressed onto ``eps_0(z, t, ∅) - eta (eps_0(z, t, c) - eps_0(z, t, ∅))`` of the frozen
  original (:class:`~jaxunlearn.diffusion.objectives.ErasedStableDiffusion`); Adam 1e-5 on
  the ``train_method`` subset only (the others frozen bit for bit), no clipping. The
  forget images are not used, only their shape and labels."""
  objective = ErasedStableDiffusion(task.model, task.diffusion, task.null_class,
                                    hp.negative_guidance, hp.start_guidance, hp.ddim_steps)
  concept = task.concept_labels
  placeholders = np.zeros((len(concept), *task.forget_x.shape[1:]), task.forget_x.dtype)
  start = {**task.variables, ESD_ORIGINAL: task.variables}
  optim = OptimSpec('adam', hp.lr, momentum=0.9, weight_decay=0.0, clip_norm=0.0,
                    saliency=True)
  variables, _ = fit(start, [Phase(placeholders, concept, objective, 'esd')],
                     steps=hp.steps, batch_size=hp.batch_size, optim=optim,
                     mask=esd_mask(task.variables['params'], hp.train_method),
                     **task.loop('esd'))
  return {k: v for k, v in variables.items() if k != ESD_ORIGINAL}
