"""Forgetting a class of a class-conditional DDPM: SalUn, SFR-on, LUR, SA, GA.

A registry like the classification one (:mod:`jaxunlearn.methods`): each method is
``fn(task: GenerationTask, hp) -> variables`` with its defaults, resolved and range-checked
by the same ``resolve_hparams(name, overrides, GENERATION_METHODS)``, and runs on the shared
loops and statistics with the task's denoising objectives, on the task's devices. Defaults are the DDPM
reference codes' (CIFAR-10, 3x32x32): Adam lr 1e-4, batch 128, gradients clipped to global
norm 1, label dropout 0.1 on retain losses. What differs is said in each method.
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.diffusion.objectives import AdaptiveDenoisingAscent, Denoising, RemappedClass
from jaxunlearn.diffusion.unlearn import GenerationTask, elbo_fisher, generate
from jaxunlearn.methods import register
from jaxunlearn.saliency import salun_mask, sfron_mask
from jaxunlearn.train import FastSlowConfig, OptimConfig, fit, fit_fast_slow, fit_joint

GENERATION_METHODS: dict = {}

_ADAM = dict(lr=1e-4, batch_size=128, clip_norm=1.0, cond_drop_prob=0.1)
# SalUn's reference weighs a per-pixel *mean* forget loss against alpha = 1e-3 times a
# per-image *sum* retain loss over 3x32x32 = 3072 pixels: a balance of 3.072 per pixel,
# which would change with the image size. We weigh two per-pixel means by that 3.072.
_SALUN_ALPHA = 1e-3 * 3 * 32 * 32


def _retain_loss(task: GenerationTask, hp: dict, **options) -> Denoising:
  return Denoising(cond_drop_prob=hp['cond_drop_prob'], null_class=task.null_class, **options)


def _adam(hp: dict, **options) -> OptimConfig:
  """The references' Adam (PyTorch defaults), no weight decay, clipped to ``clip_norm``."""
  return OptimConfig(hp['lr'], weight_decay=0.0, clip_norm=hp['clip_norm'], optimizer='adam',
                     **options)


def _loop(task: GenerationTask, hp: dict, desc: str) -> dict:
  return dict(batch_size=hp['batch_size'], **task.loop(desc))


def _statistic_args(task: GenerationTask, hp: dict) -> dict:
  """How both DDPM references read gradients for masks and Fishers: the conditional
  denoising loss at the original model, each batch gradient clipped to global norm 1."""
  return dict(batch_size=hp['batch_size'], clip_norm=1.0, parallel=task.parallel)


@register('salun', 'SalUn: remap the class to (c+1) mod C, alpha * denoising on D_r, masked '
          'to the top-`keep` salient weights', registry=GENERATION_METHODS, steps=1000,
          keep=0.5, alpha=_SALUN_ALPHA, **_ADAM)
def salun(task: GenerationTask, hp: dict):
  """SalUn for diffusion (arXiv 2310.12508, section 5): mask = top ``keep`` of |sum of
  clipped batch gradients of the denoising loss on D_f|; then joint steps on
  ``MSE(eps(x_t, t, c_f), sg(eps(x_t, t, c'))) + alpha L_diff(D_r)``, clipped to 1,
  masked, Adam."""
  mask = salun_mask(task.statistic(Denoising()), task.variables, task.forget_x, task.forget_y,
                    hp['keep'], **_statistic_args(task, hp))
  variables, _ = fit_joint(
      task.variables, task.forget_phase(RemappedClass(task.num_classes)),
      task.retain_phase(_retain_loss(task, hp, reduction='mean')), steps=hp['steps'],
      optim=_adam(hp, saliency=True, forget_weight=1.0, retain_weight=hp['alpha']),
      mask=mask, **_loop(task, hp, 'salun'))
  return variables


@register('sfron', 'SFR-on: adaptive-weighted masked ascent on the denoising loss, retain '
          'descent, every iteration (fast-slow, K=1)', registry=GENERATION_METHODS,
          iterations=150, every=1, alpha=10.0, remain_alpha=1.0, lam=0.5, gamma=1.0, mask=True,
          **_ADAM)
def sfron(task: GenerationTask, hp: dict):
  """SFR-on for DDPM (arXiv 2409.19732; its ``sfron_forget``, method 'ron', loss 'adaga'):
  Fisher-ratio mask from the denoising loss; each iteration an ascent step on the adaptive
  weighted loss (``lam``) scaled by the cosine-decayed ``alpha``, masked, clipped, then a
  descent step on ``remain_alpha`` L_diff(D_r), clipped; one Adam state for both."""
  return _sfron(task, hp, 'sfron')


def _sfron(task: GenerationTask, hp: dict, desc: str, **precondition):
  mask = None
  if hp['mask']:  # the DDPM reference's generate_fisher: clipped denoising-loss gradients
    mask = sfron_mask(task.statistic(Denoising()), task.variables, task.forget_x,
                      task.forget_y, task.retain_x, task.retain_y, hp['gamma'],
                      **_statistic_args(task, hp))
  config = FastSlowConfig(hp['lr'], 0.9, 0.0, 'constant', hp['iterations'], hp['every'],
                          hp['alpha'], 'cosine', hp['clip_norm'], saliency=hp['mask'],
                          optimizer='adam', shared_clip_norm=hp['clip_norm'], **precondition)
  forget = AdaptiveDenoisingAscent(hp['lam'], cond_drop_prob=hp['cond_drop_prob'],
                                   null_class=task.null_class)
  variables, _ = fit_fast_slow(
      task.variables, task.forget_phase(forget),
      task.retain_phase(_retain_loss(task, hp, scale=hp['remain_alpha'])), config=config,
      mask=mask, **_loop(task, hp, desc))
  return variables


@register('sfron_hvp', 'SFR-on with the explicit remain-Hessian preconditioner on each forget '
          'step (CG on H_r + damping I of the retain denoising loss)',
          registry=GENERATION_METHODS, iterations=150, every=1, alpha=10.0, remain_alpha=1.0,
          lam=0.5, gamma=1.0, mask=True, precondition='cg', damping=1.0, solver_iters=3,
          recompute=True, **_ADAM)
def sfron_hvp(task: GenerationTask, hp: dict):
  """SFR-on as :func:`sfron`, each forget direction first filtered by
  ``damping (H_r + damping I)^-1`` with ``solver_iters`` Hessian-vector products of the
  retain denoising loss on the iteration's retain batch (``precondition_by_remain_hessian``;
  ``recompute``: each product recomputes the pass instead of storing its linearisation,
  which with ``DiT(remat=True, scan_blocks=True)`` keeps DiT-XL/2 at batch 32 near 26 GiB)."""
  return _sfron(task, hp, 'sfron_hvp', precondition=hp['precondition'], damping=hp['damping'],
                solver_iters=hp['solver_iters'], recompute=hp['recompute'])


@register('lur', "LUR: joint steps on w_r L_R(theta) + w_u L_U(theta - eta grad L_R(theta)) "
          'with the diffusion losses', registry=GENERATION_METHODS, steps=1000, inner_lr=0.01,
          order='first', virtual='retain', forget_loss='rl', forget_weight=1.0,
          retain_weight=_SALUN_ALPHA, **_ADAM)
def lur(task: GenerationTask, hp: dict):
  """LUR (arXiv 2503.06339) on SalUn's diffusion losses: L_U the remapped-class loss
  ('rl') or gradient ascent on the denoising loss ('ga'), L_R the retain denoising loss
  (per-pixel mean, weighted as SalUn's alpha); ``align_forget_retain`` makes the look-ahead
  step, then clip and Adam. First order by default (the HVP of 'second' doubles a step)."""
  forget = (RemappedClass(task.num_classes) if hp['forget_loss'] == 'rl' else
            Denoising(-1.0, hp['cond_drop_prob'], task.null_class, reduction='mean'))
  optim = _adam(hp, forget_weight=hp['forget_weight'], retain_weight=hp['retain_weight'],
                lookahead_lr=hp['inner_lr'], lookahead_order=hp['order'],
                lookahead_virtual=hp['virtual'])
  variables, _ = fit_joint(
      task.variables, task.forget_phase(forget),
      task.retain_phase(_retain_loss(task, hp, reduction='mean')), steps=hp['steps'],
      optim=optim, **_loop(task, hp, 'lur'))
  return variables


@register('sa', 'Selective Amnesia: forget class -> uniform noise, generative replay of the '
          'others, EWC to the original', registry=GENERATION_METHODS, steps=1000,
          strength=10.0, replay_weight=1.0, replay_per_class=50, fisher_timesteps=20,
          sample_steps=50, guidance=2.0, **dict(_ADAM, cond_drop_prob=0.0))
def sa(task: GenerationTask, hp: dict):
  """Selective Amnesia (Heng & Soh, arXiv 2305.10120; DDPM code in both references):
  ``replay_per_class`` samples of every class from the original model (DDIM, guidance);
  the diagonal Fisher of the ELBO on them; then joint steps on ``L(noise images, c_f) +
  replay_weight L(replay of the other classes)`` plus ``strength * sum F (theta -
  theta0)^2`` (``add_elastic_penalty``), clipped, Adam. The reference replays 500 images
  per class and trains 20000 steps; labels are never dropped (its ``cond_drop_prob=0``)."""
  shape = task.forget_x.shape[1:]
  labels = np.repeat(np.arange(task.num_classes, dtype=np.int32), hp['replay_per_class'])
  samples = generate(task.model, task.variables, task.diffusion, labels, shape, task.seed,
                     num_steps=hp['sample_steps'], guidance=hp['guidance'])
  fisher = elbo_fisher(task, samples, labels, hp['fisher_timesteps'], seed=task.seed)
  keep = ~np.isin(labels, np.unique(task.forget_y))
  replay = task.phase(samples[keep], labels[keep], _retain_loss(task, hp), 'retain')
  optim = _adam(hp, forget_weight=1.0, retain_weight=hp['replay_weight'],
                elastic=hp['strength'])
  variables, _ = fit_joint(task.variables, task.forget_phase(Denoising(surrogate=True)),
                           replay, steps=hp['steps'], optim=optim, fisher=fisher,
                           **_loop(task, hp, 'sa'))
  return variables


@register('ga', 'Gradient ascent on the denoising loss of D_f', registry=GENERATION_METHODS,
          steps=200, **_ADAM)
def ga(task: GenerationTask, hp: dict):
  """``-L_diff(D_f)`` (summed over pixels, labels dropped as in training), clipped, Adam:
  forgets, and with nothing holding the rest in place, degrades every class."""
  loss = Denoising(-1.0, hp['cond_drop_prob'], task.null_class)
  variables, _ = fit(task.variables, [task.forget_phase(loss)], steps=hp['steps'],
                     optim=_adam(hp), **_loop(task, hp, 'ga'))
  return variables
