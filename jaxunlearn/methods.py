"""Unlearning methods: a registry of short recipes.

A method is a function ``(task, hp) -> variables`` registered with the class of its
hyperparameters, a frozen dataclass (:mod:`jaxunlearn.hparams`) whose fields carry their
defaults, checks and meaning; ``hp`` is an instance, the defaults updated by the user's
overrides (``jaxunlearn run --set ft.lr=0.02``). Each recipe says which losses it minimises
on which data, in which order, with which optimizer.

Defaults follow the SalUn reference (arXiv 2310.12508, github OPTML-Group/Unlearn-Saliency):
SGD with momentum 0.9 and weight decay 5e-4 at a constant learning rate, FT 10 epochs at
lr 0.01, RL 10 epochs of a random-label forget pass then a retain pass. Batch size is 128
(the reference's 256 leaves too few steps per epoch on the 1.4k-example digits set); GA's
learning rate is scaled up for the same reason (the reference's 1e-4 for 5 epochs moves a
model by almost nothing in the 10 steps digits gives it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zlib
from typing import Any, Callable

import jax
import numpy as np

from jaxunlearn import losses
from jaxunlearn.hparams import (Hyperparameters, at_least_one, did_you_mean,
                                fraction, hparam, non_negative, one_of, positive, probability)
from jaxunlearn.influence import fisher_diagonal_per_example, influence_direction
from jaxunlearn.objectives import Classifier
from jaxunlearn.optim import OptimSpec
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.saliency import accumulate_gradients, salun_mask, sfron_mask
from jaxunlearn.step import predict
from jaxunlearn.train import (LoopControl, Phase, TrainConfig, fit, fit_fast_slow,
                              fit_joint, init_variables, num_batches, train_classifier)


class TaskSets:
  """What every task (:class:`UnlearnTask`, ``GenerationTask``) shares: its phases, built
  from its ``objective(loss)``, and the keyword arguments its loops take from it."""

  def phase(self, x, y, loss, name: str = 'train', epochs: int | None = None,
            **objective) -> Phase:
    """A pass over ``(x, y)`` minimising ``loss`` through the task's objective."""
    return Phase(x, y, self.objective(loss, **objective), name, epochs)

  def forget_phase(self, loss, name: str = 'forget', **kw) -> Phase:
    return self.phase(self.forget_x, self.forget_y, loss, name, **kw)

  def retain_phase(self, loss, name: str = 'retain', **kw) -> Phase:
    return self.phase(self.retain_x, self.retain_y, loss, name, **kw)

  def loop(self, desc: str) -> dict:
    """The keyword arguments every training loop of a method takes from the task."""
    return dict(seed=self.seed, desc=desc, progress=self.progress, callback=self.callback,
                callback_every=self.callback_every, parallel=self.parallel,
                control=self.control)


@dataclasses.dataclass(frozen=True)
class UnlearnTask(TaskSets):
  """What every method receives: the model, the original weights and the data.

  Attributes:
    model: the flax module.
    variables: the original (trained on D_f + D_r) flax variables.
    forget_x, forget_y: the forget set D_f.
    retain_x, retain_y: the retain set D_r.
    num_classes: number of classes of the head.
    seed: the run's seed; methods derive all randomness from it.
    progress: show a progress bar.
    callback: ``callback(updates, variables)``, called by the iterative methods every
      ``callback_every`` optimizer updates and at the end (for curves over steps).
    parallel: the devices the methods run on (:class:`jaxunlearn.parallel.Parallel`): their
      steps, saliency masks, Fisher statistics and teacher outputs (Boundary Shrink's FGSM
      input gradients and the influence step run on one device).
    control: the loop's checkpoints (resume) and non-finite guard
      (:class:`jaxunlearn.train.LoopControl`; None: no checkpoints, stop after 10
      non-finite steps in a row).

  Shapes, dtypes and labels are checked when the task is made; :meth:`validate` also
  checks that the model takes the data and that no forget example appears in the retain
  set (``Method.run`` calls it).
  """

  model: Any
  variables: Any
  forget_x: np.ndarray
  forget_y: np.ndarray
  retain_x: np.ndarray
  retain_y: np.ndarray
  num_classes: int
  seed: int = 0
  progress: bool = True
  callback: Callable | None = None
  callback_every: int = 0
  parallel: Parallel = SINGLE
  control: LoopControl | None = None

  def __post_init__(self):
    check_sets(self)

  def validate(self) -> None:
    """The checks that cost a pass over the data (and, with ``variables``, a trace of the
    model); raises ValueError saying what is wrong."""
    overlap = shared_examples(self.forget_x, self.retain_x)
    if overlap:
      raise ValueError(f'{len(overlap)} forget examples also appear in the retain set (forget '
                       f'row {overlap[0][0]} = retain row {overlap[0][1]}, ...): a model cannot '
                       'forget what it keeps training on; remove the duplicates from one set')
    if self.variables is not None:
      variables = self.variables
      if self.parallel.is_ensemble:  # one model's variables stand for all
        variables = jax.tree.map(lambda a: a[0], variables)
      try:
        out = jax.eval_shape(lambda v, x: self.model.apply(v, x, train=False), variables,
                             jax.ShapeDtypeStruct((1, *self.forget_x.shape[1:]), np.float32))
      except Exception as e:  # flax raises many types for a mismatched input
        raise ValueError(f'the model does not take images of shape {self.forget_x.shape[1:]} '
                         f'with these variables ({type(e).__name__}: {str(e)[:200]})') from e
      if out.shape[-1] != self.num_classes:
        raise ValueError(f'the model has {out.shape[-1]} outputs but the task '
                         f'{self.num_classes} classes')

  def objective(self, loss, model=None, train: bool = True) -> Classifier:
    """The task's objective for a loss on logits: ``Classifier(model or self.model, loss)``."""
    return Classifier(self.model if model is None else model, loss, train)

  def statistic(self, loss) -> Classifier:
    """The objective of the statistics computed once before a loop (saliency gradients,
    Fishers): ``loss`` on the logits of the model in eval mode, as both references."""
    return self.objective(loss, train=False)


def per_model(task: UnlearnTask, fn: Callable):
  """``fn(variables)`` for the task's model, or for each model of an ensemble task
  (``parallel`` mode 'vmap') one after another, the outputs stacked: for what a method
  computes once before its loop (saliency masks, Fisher ratios)."""
  if not task.parallel.is_ensemble:
    return fn(task.variables)
  outs = [fn(jax.tree.map(lambda a, i=i: a[i], task.variables))
          for i in range(task.parallel.models)]
  return jax.tree.map(lambda *a: np.stack(a), *outs)


def check_sets(task) -> None:
  """Checks a task's forget and retain sets (:func:`check_examples`) and that their
  images have one shape."""
  check_examples(task.forget_x, task.forget_y, task.num_classes, 'forget')
  check_examples(task.retain_x, task.retain_y, task.num_classes, 'retain')
  if task.forget_x.shape[1:] != task.retain_x.shape[1:]:
    raise ValueError(f'forget images {task.forget_x.shape[1:]} and retain images '
                     f'{task.retain_x.shape[1:]} differ in shape')


def check_examples(x, y, num_classes: int, what: str) -> None:
  """Raises ValueError unless ``x`` is a non-empty float ``[N, H, W, C]`` array and ``y``
  ``[N]`` integer labels in ``0..num_classes-1``."""
  x, y = np.asarray(x), np.asarray(y)
  if len(y) == 0:
    raise ValueError(f'the {what} set is empty: give it at least one example')
  if x.ndim != 4:
    raise ValueError(f'{what} images must be [N, H, W, C], got shape {x.shape}')
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'{what} images have dtype {x.dtype}: convert them to float32 (and '
                     'normalise them as the model was trained)')
  if y.shape != (x.shape[0],):
    raise ValueError(f'{what} labels have shape {y.shape}, expected ({x.shape[0]},) to match '
                     f'its {x.shape[0]} images')
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{what} labels have dtype {y.dtype}: they must be integer class ids')
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f'{what} labels must lie in 0..{num_classes - 1}, found '
                     f'{int(y.min())}..{int(y.max())}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{what} images contain NaN or inf values')


def _row_hashes(x) -> dict:
  x = np.ascontiguousarray(x)
  return {hashlib.blake2b(row.tobytes(), digest_size=16).digest(): i for i, row in enumerate(x)}


def shared_examples(a, b) -> list[tuple[int, int]]:
  """``(row of a, row of b)`` pairs of byte-identical examples (hashed rows)."""
  in_b = _row_hashes(b)
  a = np.ascontiguousarray(a)
  return [(i, in_b[h]) for i, h in
          ((i, hashlib.blake2b(row.tobytes(), digest_size=16).digest())
           for i, row in enumerate(a)) if h in in_b]


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: ``fn(task, hp) -> variables``, the class of its hyperparameters
  and a summary.

  ``registry`` is the table it is registered in: :data:`METHODS` (classification) or
  :data:`jaxunlearn.diffusion.methods.GENERATION_METHODS`.
  """

  name: str
  fn: Callable[[Any, Any], Any]
  hparams: type
  summary: str
  registry: dict = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def defaults(self) -> dict:
    """The default hyperparameters, as a dict."""
    return self.hparams().to_dict()

  def run(self, task, hp=None):
    """Unlearns with ``hp`` (an instance of :attr:`hparams`, or a dict of overrides of
    its defaults: names, types and ranges checked), after ``task.validate()``; returns the
    new flax variables."""
    if isinstance(hp, Hyperparameters) and not isinstance(hp, self.hparams):
      raise TypeError(f'method {self.name!r} takes {self.hparams.__name__} hyperparameters, '
                      f'got {type(hp).__name__} (those of {hp.method!r}); pass '
                      f'resolve_hparams({self.name!r}, overrides) or a dict of overrides')
    if not isinstance(hp, self.hparams):
      hp = resolve_hparams(self.name, hp, self.registry)
    task.validate()
    return self.fn(task, hp)


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, hparams: type, registry: dict | None = None):
  """Decorator: registers ``fn(task, hp) -> variables`` as method ``name`` in ``registry``
  (default :data:`METHODS`), with ``hparams`` (a :class:`Hyperparameters` dataclass of its
  own: error messages name the method) as the type of ``hp``."""
  registry = METHODS if registry is None else registry
  if not (isinstance(hparams, type) and issubclass(hparams, Hyperparameters)):
    raise TypeError(f'{name}: hparams must be a Hyperparameters dataclass, got {hparams!r}')
  if hparams.__dict__.get('method'):
    raise ValueError(f'{name}: {hparams.__name__} already belongs to method '
                     f'{hparams.method!r}; give each method a class of its own (a subclass)')

  def wrap(fn):
    if name in registry:
      raise ValueError(f'method {name!r} is registered twice')
    hparams.method = name
    registry[name] = Method(name, fn, hparams, summary, registry)
    return fn
  return wrap


# The reference code bases' names of methods that are called otherwise here.
REFERENCE_NAMES = {
    'ft_prune': ('l1_sparse', "the SalUn code's FT_prune runs FT_l1, the l1-sparse recipe"),
    'wfisher': ('iu', "the SalUn code's wfisher is influence unlearning (WoodFisher)"),
    'boundary_shrink': ('bs', ''), 'boundary_expanding': ('be', ''),
    'shs': ('scissorhands', ''), 'fisher_forgetting': ('fisher', ''),
    'bt': ('bad_teacher', ''),
}


def get_method(name: str, registry: dict | None = None) -> Method:
  registry = METHODS if registry is None else registry
  ours = REFERENCE_NAMES.get(name.lower())
  if name not in registry and registry is METHODS and ours is not None:
    why = f' ({ours[1]})' if ours[1] else ''
    raise ValueError(f'unknown method {name!r}: the reference code\'s {name} is {ours[0]!r} '
                     f'here{why}; use {ours[0]}')
  if name not in registry:
    raise ValueError(f'unknown method {name!r}{did_you_mean(name, registry)}; available: '
                     f'{", ".join(sorted(registry))}')
  return registry[name]


def resolve_hparams(name: str, overrides: dict | None = None,
                    registry: dict | None = None) -> Hyperparameters:
  """Method ``name``'s hyperparameters: its defaults updated by ``overrides`` (values, or
  command-line strings cast to the default's type), checked.

  Raises:
    ValueError: an override names a hyperparameter the method does not have, or a value
      has the wrong type or lies out of its range.
  """
  return get_method(name, registry).hparams.resolve(overrides)


def _one(task: UnlearnTask) -> Parallel:
  """The devices of one model's pre-loop computations (an ensemble's run one by one)."""
  return SINGLE if task.parallel.is_ensemble else task.parallel


@dataclasses.dataclass(frozen=True)
class SGDSettings(Hyperparameters):
  """PyTorch's ``SGD(lr, momentum, weight_decay)`` over batches of ``batch_size``."""

  lr: float = positive(0.01, 'peak learning rate')
  momentum: float = probability(0.9, 'heavy-ball momentum')
  weight_decay: float = non_negative(5e-4, 'L2 coefficient added to the gradient')
  schedule: str = one_of(('constant', 'cosine'), 'constant', 'learning-rate schedule')
  batch_size: int = at_least_one(128, 'examples per batch of each set')


@dataclasses.dataclass(frozen=True)
class SGD(SGDSettings):
  """:class:`SGDSettings` for ``epochs`` passes."""

  epochs: int = at_least_one(10, 'passes over the data')


def _sgd(hp: SGDSettings, **options) -> OptimSpec:
  return OptimSpec(lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                   schedule=hp.schedule, **options)


def _fit(task: UnlearnTask, hp: SGD, phases, desc: str, variables=None, mask=None,
         **options):
  """``fit`` from the original (or ``variables``) with the method's SGD."""
  variables, _ = fit(task.variables if variables is None else variables, phases,
                     epochs=hp.epochs, batch_size=hp.batch_size,
                     optim=_sgd(hp, **options), mask=mask, **task.loop(desc))
  return variables


def _forget_loss(hp):
  """Random-label CE, excluding the true label unless ``exclude_true_label`` is false."""
  return (losses.random_label_cross_entropy if hp.exclude_true_label else
          losses.random_label_cross_entropy_with_true)


def _logits(task: UnlearnTask, variables, x):
  return predict(task.model, variables, x, parallel=task.parallel)


@dataclasses.dataclass(frozen=True)
class Retrain(TrainConfig):
  """The original model's recipe (:class:`jaxunlearn.train.TrainConfig`), on D_r."""


@register('retrain', 'Retrain from scratch on D_r (the gold standard)', Retrain)
def retrain(task: UnlearnTask, hp: Retrain):
  return train_classifier(task.model, task.retain_x, task.retain_y, hp, **task.loop('retrain'))


@dataclasses.dataclass(frozen=True)
class FT(SGD):
  pass


@register('ft', 'Fine-tune: CE on D_r', FT)
def ft(task: UnlearnTask, hp: FT):
  return _fit(task, hp, [task.retain_phase(losses.cross_entropy)], 'ft')


@dataclasses.dataclass(frozen=True)
class GA(SGD):
  lr: float = positive(0.005, 'peak learning rate')
  epochs: int = at_least_one(5, 'passes over D_f')
  clip_norm: float = non_negative(0.0, 'global-norm clip of every update (0: none)')


@register('ga', 'Gradient ascent: -CE on D_f', GA)
def ga(task: UnlearnTask, hp: GA):
  """SGD ascending CE on D_f (``ascent``: the gradient of CE with its sign flipped, the
  gradient of -CE bit for bit, in the plain step's compiled program). ``clip_norm`` clips
  each gradient before SGD's weight decay and momentum, as ``clip_grad_norm`` before
  ``SGD.step`` (SFR-on's code: 0.1 on CIFAR-10)."""
  return _fit(task, hp, [task.forget_phase(losses.cross_entropy)], 'ga',
              clip_norm=hp.clip_norm, ascent=True)


def _salun_mask(task: UnlearnTask, hp):
  """SalUn's mask: top ``keep`` of |sum of grad(-CE) over D_f|, eval mode (each model's)."""
  objective = task.statistic(losses.gradient_ascent)
  return per_model(task, lambda v: salun_mask(objective, v, task.forget_x, task.forget_y,
                                              hp.keep, hp.batch_size,
                                              parallel=_one(task)))


def _rl_phases(task: UnlearnTask, hp):
  """Each epoch a random-label pass over D_f then a CE pass over D_r (``passes='alternate'``,
  the SalUn code's CIFAR-10 branch), or one shuffled pass over both (``'mixed'``, its
  CIFAR-100 / Tiny-ImageNet branch)."""
  if hp.passes == 'mixed':
    x = np.concatenate([task.forget_x, task.retain_x])
    y = {'label': np.concatenate([task.forget_y, task.retain_y]),
         'forget': np.concatenate([np.ones(len(task.forget_y), np.int32),
                                   np.zeros(len(task.retain_y), np.int32)])}
    return [task.phase(x, y, losses.MixedRandomLabels(hp.exclude_true_label), 'mixed')]
  return [task.forget_phase(_forget_loss(hp)), task.retain_phase(losses.cross_entropy)]


@dataclasses.dataclass(frozen=True)
class RandomLabels(SGD):
  exclude_true_label: bool = hparam(True, doc='draw random labels among the other classes')


@dataclasses.dataclass(frozen=True)
class RL(RandomLabels):
  passes: str = one_of(('alternate', 'mixed'), 'alternate',
                       'each epoch a forget pass then a retain pass, or one shuffled pass '
                       'over both')


@register('rl', 'Random labels on D_f, then CE on D_r, each epoch', RL)
def rl(task: UnlearnTask, hp: RL):
  return _fit(task, hp, _rl_phases(task, hp), 'rl')


@dataclasses.dataclass(frozen=True)
class SalUn(RL):
  lr: float = positive(0.013, 'peak learning rate')
  keep: float = fraction(0.5, 'share of the weights updated (the most salient)')


@register('salun', 'SalUn: RL passes updating only the top-`keep` salient weights (|grad -CE|)',
          SalUn)
def salun(task: UnlearnTask, hp: SalUn):
  """SalUn (Fan et al., ICLR 2024, arXiv 2310.12508), as its reference code runs it.

  Mask: top ``keep`` of |sum over D_f batches of grad(-CE)| at the original model, eval
  mode, ranked over all parameters. Then each epoch a random-label pass over D_f and a CE
  pass over D_r, gradients masked before SGD; ``mask_by_saliency(freeze=True)`` wraps the
  optimizer so that masked weights stay exactly at their original values.
  """
  mask = _salun_mask(task, hp)
  return _fit(task, hp, _rl_phases(task, hp), 'salun', mask=mask, saliency=True)


@dataclasses.dataclass(frozen=True)
class SalUnJoint(RandomLabels):
  lr: float = positive(0.013, 'peak learning rate')
  keep: float = fraction(0.5, 'share of the weights updated (the most salient)')
  retain_weight: float = non_negative(1.0, "weight of the retain loss (CE, the reference's alpha)")
  renamed = {'alpha': 'retain_weight'}


@register('salun_joint', 'SalUn, one joint step: CE(x_f, y\') + w_r CE(x_r, y_r), masked',
          SalUnJoint)
def salun_joint(task: UnlearnTask, hp: SalUnJoint):
  """SalUn's objective ``L = CE(x_f, y') + w_r CE(x_r, y_r)`` (``retain_weight``; the
  reference's ``alpha``) minimised in joint steps: ``combine_forget_retain(1, w_r)`` then
  the masked optimizer."""
  variables, _ = fit_joint(
      task.variables, task.forget_phase(_forget_loss(hp)),
      task.retain_phase(losses.cross_entropy), epochs=hp.epochs,
      batch_size=hp.batch_size,
      optim=_sgd(hp, saliency=True, forget_weight=1.0, retain_weight=hp.retain_weight),
      mask=_salun_mask(task, hp), **task.loop('salun_joint'))
  return variables


@dataclasses.dataclass(frozen=True)
class SFRon(SGDSettings):
  schedule: str = one_of(('constant', 'cosine'), 'cosine', 'learning-rate schedule')
  iterations: int = at_least_one(100, 'iterations T, a retain step each')
  every: int = at_least_one(5, 'K: a forget step every K-th iteration')
  forget_weight: float = non_negative(
      25.0, "weight of the forget loss (at t = 0, cosine-decayed over T: the reference's alpha)")
  lam: float = non_negative(0.5, "the adaptive ascent loss's temperature lambda")
  gamma: float = positive(1.0, 'Fisher-ratio threshold of the mask (F_f / F_r >= gamma)')
  mask: bool = hparam(True, doc='mask forget steps by the Fisher ratio')
  forget_clip_norm: float = non_negative(7.0, 'global-norm clip of forget updates (0: none)')
  renamed = {'alpha': 'forget_weight', 'clip_norm': 'forget_clip_norm'}


def _sfron(task: UnlearnTask, hp: SFRon, desc: str, **options):
  mask = None
  if hp.mask:
    mask = per_model(task, lambda v: sfron_mask(
        task.statistic(losses.cross_entropy), v, task.forget_x, task.forget_y, task.retain_x,
        task.retain_y, hp.gamma, hp.batch_size, parallel=_one(task)))
  optim = _sgd(hp, every=hp.every, forget_weight=hp.forget_weight, forget_schedule='cosine',
               forget_clip_norm=hp.forget_clip_norm, saliency=hp.mask, **options)
  variables, _ = fit_fast_slow(
      task.variables, task.forget_phase(losses.AdaptiveGradientAscent(hp.lam)),
      task.retain_phase(losses.cross_entropy), iterations=hp.iterations, optim=optim,
      batch_size=hp.batch_size, mask=mask, **task.loop(desc))
  return variables


@dataclasses.dataclass(frozen=True)
class SFRonFastSlow(SFRon):
  pass


@register('sfron', 'SFR-on: adaptive-weighted masked ascent every K-th step, retain descent '
          'every step (fast-slow)', SFRonFastSlow)
def sfron(task: UnlearnTask, hp: SFRonFastSlow):
  """SFR-on (Huang et al., NeurIPS 2024, arXiv 2409.19732) as its reference code runs it:
  Fisher-ratio mask ``F_f / F_r >= gamma`` (eval mode), then ``iterations`` iterations of
  a retain CE step, preceded every ``every``-th by an ascent step on the adaptive weighted
  loss (``lam``), scaled by the cosine-decayed ``forget_weight``, masked, clipped to
  ``forget_clip_norm``;
  one SGD state for both. CIFAR-10 settings; ``iterations`` scaled to digits (100
  iterations = 10 passes over its retain set, as FT's 10 epochs)."""
  return _sfron(task, hp, 'sfron')


@dataclasses.dataclass(frozen=True)
class SFRonHVP(SFRon):
  iterations: int = at_least_one(20, 'iterations T, a retain step each')
  every: int = at_least_one(1, 'K: a forget step every K-th iteration')
  precondition: str = one_of(('none', 'cg', 'neumann'), 'cg', 'solver of (H_r + damping I)^-1')
  damping: float = positive(1.0, 'damping of the remain Hessian')
  solver_iters: int = at_least_one(5, 'CG or Neumann iterations (Hessian-vector products)')
  recompute: bool = hparam(False, doc='recompute the remain pass in every product')


@register('sfron_hvp', 'SFR-on with the explicit remain-Hessian preconditioner on each forget '
          'step (CG on H_r + damping I)', SFRonHVP)
def sfron_hvp(task: UnlearnTask, hp: SFRonHVP):
  """SFR-on with its remain geometry made explicit: every forget step's direction is
  filtered by ``damping (H_r + damping I)^-1`` (``solver_iters`` CG or Neumann iterations
  of Hessian-vector products on the current retain batch) before the mask and clip, in
  place of the implicit ``(I - lr H_r)^K`` of the fast-slow schedule, so a forget step can
  come every iteration (``every=1``). ``recompute=true`` recomputes the remain pass in every
  product instead of storing its linearisation (memory for compute, for large models)."""
  return _sfron(task, hp, 'sfron_hvp', precondition=hp.precondition, damping=hp.damping,
                solver_iters=hp.solver_iters, recompute=hp.recompute)


@dataclasses.dataclass(frozen=True)
class LUR(RandomLabels):
  inner_lr: float = non_negative(0.01, 'eta: the look-ahead step on the retain loss')
  order: str = one_of(('first', 'second'), 'second', "the look-ahead's derivative")
  virtual: str = one_of(('retain', 'forget'), 'retain', 'which loss the virtual step takes')
  forget_loss: str = one_of(('rl', 'ga'), 'rl', 'L_U: random labels or gradient ascent')
  forget_weight: float = non_negative(1.0, 'weight of the forget loss (w_u)')
  retain_weight: float = non_negative(1.0, 'weight of the retain loss (w_r)')
  reinit: bool = hparam(False, doc="ScissorHands' SNIP re-initialisation of the last two "
                        'stages and head before the steps')
  sparsity: float = fraction(0.97, 'share of the weights SNIP keeps; the rest, the most '
                             'salient for D_f, are re-initialised (last stages and head)')


@register('lur', "LUR: joint steps on w_r L_R(theta) + w_u L_U(theta - eta grad L_R(theta))",
          LUR)
def lur(task: UnlearnTask, hp: LUR):
  """LUR (Patel & Qiu, ICCV 2025, arXiv 2503.06339; code unreleased): each retain batch is
  paired with a forget batch and one SGD step follows the gradient of the look-ahead
  objective (``align_forget_retain``: ``w_r g_R + w_u (I - eta H_R) grad L_U(theta')``,
  ``order='first'`` without the HVP). ``forget_loss``: 'rl' (random-label CE) or 'ga';
  ``reinit``: :func:`snip_reinit` first (ScissorHands' trimming, ``sparsity``). What the
  paper fixes and what we chose: docs/lur.md."""
  forget = _forget_loss(hp) if hp.forget_loss == 'rl' else losses.gradient_ascent
  variables = task.variables
  if hp.reinit:
    prefixes = _last_stages(task, 2)
    variables = per_model(task, lambda v: snip_reinit(task, v, hp.sparsity, hp.batch_size, 1,
                                                      prefixes, task.seed))
  variables, _ = fit_joint(
      variables, task.forget_phase(forget), task.retain_phase(losses.cross_entropy),
      epochs=hp.epochs,
      batch_size=hp.batch_size,
      optim=_sgd(hp, forget_weight=hp.forget_weight, retain_weight=hp.retain_weight,
                 lookahead_lr=hp.inner_lr, lookahead_order=hp.order,
                 lookahead_virtual=hp.virtual), **task.loop('lur'))
  return variables


@dataclasses.dataclass(frozen=True)
class L1Sparse(SGD):
  strength: float = non_negative(
      1e-4, "weight of the penalty (l1, at step 0, decayed linearly to 0: the reference's alpha)")
  renamed = {'alpha': 'strength'}


@register('l1_sparse', 'FT with an l1 penalty decaying linearly to 0 (Jia et al. 2023)',
          L1Sparse)
def l1_sparse(task: UnlearnTask, hp: L1Sparse):
  """``CE(D_r) + s_t ||theta||_1``; ``s_t`` decays linearly from ``strength`` to 0 over the run
  (the reference steps it per epoch; we decay per step)."""
  steps = hp.epochs * -(-len(task.retain_y) // hp.batch_size)
  return _fit(task, hp, [task.retain_phase(losses.cross_entropy)],
              'l1_sparse', l1=hp.strength, l1_decay_steps=steps)


@dataclasses.dataclass(frozen=True)
class GAL1(GA):
  strength: float = non_negative(1e-4, 'weight of the penalty (l1, held constant)')


@register('ga_l1', 'GA with a constant l1 penalty: -CE(D_f) + s ||theta||_1 (SalUn code GA_l1)',
          GAL1)
def ga_l1(task: UnlearnTask, hp: GAL1):
  """The SalUn code's ``GA_l1``: gradient ascent on D_f with ``strength * ||theta||_1`` added
  to the loss at every step (not decayed, unlike l1-sparse's)."""
  return _fit(task, hp, [task.forget_phase(losses.gradient_ascent)], 'ga_l1',
              clip_norm=hp.clip_norm, l1=hp.strength, l1_decay_steps=0)


@dataclasses.dataclass(frozen=True)
class IU(Hyperparameters):
  step_size: float = non_negative(10.0, "size of the Newton step (the reference's alpha)")
  damping: float = positive(1.0, 'added to the Fisher diagonal')
  num_samples: int = at_least_one(256, 'examples of the WoodFisher estimate')
  renamed = {'alpha': 'step_size'}


@register('iu', 'Influence unlearning: one WoodFisher (inverse-Fisher) Newton step', IU)
def iu(task: UnlearnTask, hp: IU):
  """``theta += step_size F^{-1} (g_f - g_r)`` (see :mod:`jaxunlearn.influence`)."""
  direction = influence_direction(task.model, task.variables, task.forget_x, task.forget_y,
                                  task.retain_x, task.retain_y, num_samples=hp.num_samples,
                                  damping=hp.damping)
  params = jax.tree.map(lambda p, d: p + hp.step_size * np.asarray(d, p.dtype),
                        task.variables['params'], direction)
  return {**task.variables, 'params': params}


@functools.lru_cache(maxsize=16)
def _input_gradient(model):
  def loss(variables, x, y):
    return losses.cross_entropy(model.apply(variables, x, train=False), y).sum()
  return jax.jit(jax.grad(loss, argnums=1))


def fgsm_labels(model, variables, x, y, bound: float):
  """Labels the original model gives to FGSM neighbours ``x + bound sign(grad_x CE)``."""
  grad_x = np.asarray(_input_gradient(model)(variables, x, y))
  return predict(model, variables, x + bound * np.sign(grad_x)).argmax(-1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class BS(SGD):
  bound: float = non_negative(0.1, "FGSM step size (standardized units)")


@register('bs', 'Boundary Shrink: train D_f toward its FGSM neighbour\'s label (Chen et al. 2023)',
          BS)
def bs(task: UnlearnTask, hp: BS):
  """Boundary Shrink (arXiv 2303.11570): the frozen original labels an FGSM step (bound 0.1)
  from each forget example; the model is trained on D_f with those labels. Our inputs are
  standardized, so ``bound`` is in standardized units and no [0, 1] clamp or 8-bit
  rounding applies (the reference attacks raw [0, 1] pixels)."""
  adv = fgsm_labels(task.model, task.variables, task.forget_x, task.forget_y, hp.bound)
  return _fit(task, hp, [task.phase(task.forget_x, adv, losses.cross_entropy, 'forget')], 'bs')


@dataclasses.dataclass(frozen=True)
class BE(SGD):
  pass


@register('be', 'Boundary Expanding: D_f to an extra shadow class, then drop it', BE)
def be(task: UnlearnTask, hp: BE):
  """Boundary Expanding (arXiv 2303.11570): widen the head by one shadow class (new row
  initialised like PyTorch's Linear), train D_f toward it, then remove the shadow row.
  The SalUn reference code never removes it, so its evaluation argmaxes over C+1 classes."""
  c = task.num_classes
  wide = task.model.clone(num_classes=c + 1)
  head = task.variables['params']['head']
  fan_in = head['kernel'].shape[0]
  k1, k2 = jax.random.split(jax.random.key(task.seed))
  bound = 1.0 / np.sqrt(fan_in)
  kernel = np.concatenate([head['kernel'], np.asarray(
      jax.random.uniform(k1, (fan_in, 1), minval=-bound, maxval=bound))], axis=1)
  bias = np.concatenate([head['bias'], np.asarray(
      jax.random.uniform(k2, (1,), minval=-bound, maxval=bound))])
  params = {**task.variables['params'], 'head': {'kernel': kernel, 'bias': bias}}
  shadow = np.full_like(task.forget_y, c)
  if task.callback is not None:  # it measures the task's C-class model: show it that one
    task = dataclasses.replace(task, callback=_WithoutShadowClass(task.callback, c))
  out = _fit(task, hp, [task.phase(task.forget_x, shadow, losses.cross_entropy, 'forget',
                                   model=wide)], 'be',
             variables={**task.variables, 'params': params})
  return _drop_shadow_class(out, c)


def _drop_shadow_class(variables, num_classes: int):
  """Variables of a head widened by shadow classes, cut back to ``num_classes``."""
  head = variables['params']['head']
  return {**variables, 'params': {**variables['params'], 'head': {
      'kernel': head['kernel'][:, :num_classes], 'bias': head['bias'][:num_classes]}}}


class _WithoutShadowClass:
  """A loop callback (e.g. the alignment probe) that sees BE's widened model as the
  task's ``num_classes`` model; its checkpointed record (``state_dict``) passes through."""

  def __init__(self, callback, num_classes: int):
    self.callback, self.num_classes = callback, num_classes

  def __call__(self, steps, variables):
    return self.callback(steps, _drop_shadow_class(variables, self.num_classes))

  def __getattr__(self, name):  # state_dict, load_state_dict, ...
    if name == 'callback':  # not set yet (a copy being built): no recursion
      raise AttributeError(name)
    return getattr(self.callback, name)


@dataclasses.dataclass(frozen=True)
class SCRUB(SGD):
  lr: float = positive(0.0005, 'peak learning rate')
  schedule: str = one_of(('constant', 'cosine'), 'cosine', 'learning-rate schedule')
  epochs: int = at_least_one(6, 'passes (the retain pass each epoch)')
  msteps: int = non_negative(2, 'epochs with the forget (max) pass first')
  ce_weight: float = non_negative(0.99, "weight of CE in the retain loss (the reference's gamma)")
  kl_weight: float = non_negative(0.001, "weight of KL in the retain loss (the reference's alpha)")
  temperature: float = positive(4.0, 'distillation temperature')
  renamed = {'alpha': 'kl_weight', 'gamma': 'ce_weight'}


@register('scrub', 'SCRUB: max KL to the teacher on D_f (first msteps epochs), min CE+KL on D_r',
          SCRUB)
def scrub(task: UnlearnTask, hp: SCRUB):
  """SCRUB (Kurmanji et al., NeurIPS 2023, arXiv 2302.09880), student = the original,
  teacher = the frozen original; its forget "max" pass runs in the first ``msteps`` epochs,
  the retain "min" pass every epoch; CIFAR-10 settings of SFR-on's code, lr scaled for
  digits."""
  teacher = lambda x, y: {'label': y, 'teacher': _logits(task, task.variables, x)}
  phases = [task.phase(task.forget_x, teacher(task.forget_x, task.forget_y),
                       losses.DistillKL(hp.temperature, sign=-1.0), 'forget',
                       epochs=hp.msteps),
            task.phase(task.retain_x, teacher(task.retain_x, task.retain_y),
                       losses.ScrubRetainLoss(hp.ce_weight, hp.kl_weight, hp.temperature),
                       'retain')]
  return _fit(task, hp, phases, 'scrub')


@dataclasses.dataclass(frozen=True)
class BadTeacher(SGD):
  lr: float = positive(0.02, 'peak learning rate')
  schedule: str = one_of(('constant', 'cosine'), 'cosine', 'learning-rate schedule')
  temperature: float = positive(1.0, 'distillation temperature')


@register('bad_teacher', 'Bad Teacher: distil the original on D_r, a random model on D_f',
          BadTeacher)
def bad_teacher(task: UnlearnTask, hp: BadTeacher):
  """Bad Teacher (Chundawat et al., AAAI 2023, arXiv 2205.08096): on D_r + D_f shuffled
  together, the student matches the competent teacher (the original) on retain examples and
  an incompetent, randomly initialised one on forget examples."""
  random_model = init_variables(task.model, task.forget_x.shape[1:], task.seed + 1)
  t = hp.temperature
  soft = lambda logits: np.asarray(jax.nn.softmax(logits / t, axis=-1))
  x = np.concatenate([task.retain_x, task.forget_x])
  probs = np.concatenate([soft(_logits(task, task.variables, task.retain_x)),
                          soft(_logits(task, random_model, task.forget_x))])
  y = {'label': np.concatenate([task.retain_y, task.forget_y]), 'teacher_probs': probs}
  return _fit(task, hp, [task.phase(x, y, losses.TeacherKL(t), 'mixed')], 'bad_teacher')


@dataclasses.dataclass(frozen=True)
class ScissorHands(SGD):
  lr: float = positive(0.005, 'peak learning rate')
  sparsity: float = fraction(0.97, 'share of the weights SNIP keeps; the rest, the most '
                             'salient for D_f, are re-initialised (last stages and head)')
  forget_weight: float = non_negative(0.05, "weight of the forget loss (-CE on D_f; the "
                                      "reference's lam)")
  project: bool = hparam(True, doc='project each update so that it does not raise the forget '
                         'loss (GEM with one memory, refreshed every epoch)')
  snip_batches: int = at_least_one(1, "random D_f batches SNIP scores on (the reference's "
                                   "prune_num)")
  last_stages: int = at_least_one(2, 'ResNet stages, counted from the last, re-initialised '
                                  'and projected (with the head)')
  renamed = {'lam': 'forget_weight', 'prune_num': 'snip_batches'}


def _last_stages(task: UnlearnTask, last: int) -> tuple[str, ...]:
  """The top-level module names of the last ``last`` ResNet stages, and the head."""
  params = task.variables['params']
  stages = sorted({k.split('_')[0] for k in params if k.startswith('stage')},
                  key=lambda s: int(s[5:]))
  if not stages or 'head' not in params:
    raise ValueError('ScissorHands re-initialises the last stages and the head of a ResNet '
                     f'(stage*_block* and head modules); this model has {sorted(params)}')
  return (*stages[-last:], 'head')


def snip_reinit(task: UnlearnTask, variables, sparsity: float, batch_size: int,
                snip_batches: int, prefixes, seed: int):
  """ScissorHands' trimming (arXiv 2401.06187, its code's ``snip``): SNIP scores
  ``|w * sum_b |grad CE(D_f batch b)||`` over ``snip_batches`` random forget batches (train
  mode, as its model is then), ranked over all weights; the weights above the
  ``sparsity`` quantile under the modules ``prefixes`` are re-initialised as PyTorch
  initialises them (kernels ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, biases 0). BatchNorm
  parameters are left alone: the reference's test ``'bn' not in name`` meant that, but its
  shortcut BatchNorms (``downsample.1``) slip through and get a kaiming-uniform scale."""
  rng = np.random.default_rng([seed, 11])
  objective = task.objective(losses.cross_entropy)
  n = len(task.forget_y)
  score = None
  for _ in range(snip_batches):
    idx = np.sort(rng.choice(n, size=min(batch_size, n), replace=False))
    g = jax.tree.map(np.abs, jax.device_get(accumulate_gradients(
        objective, variables, task.forget_x[idx], task.forget_y[idx], len(idx),
        parallel=_one(task))))
    score = g if score is None else jax.tree.map(np.add, score, g)
  params = jax.tree.map(np.asarray, variables['params'])
  salience = jax.tree.map(lambda g, w: np.abs(g * w), score, params)
  flat = np.concatenate([np.ravel(s) for s in jax.tree.leaves(salience)])
  k = int(sparsity * flat.size)
  threshold = np.partition(flat, k - 1)[k - 1] if k >= 1 else -np.inf
  if threshold >= flat.max() - 1e-12 or threshold <= flat.min() + 1e-12:  # the reference's
    threshold = (flat.max() - flat.min()) / 2.0                            # fallback
  key = jax.random.key(seed)

  def reinit(path, w, s):
    names = [getattr(p, 'key', '') for p in path]
    if not names[0].startswith(tuple(prefixes)) or any('bn' in n for n in names):
      return w
    if names[-1] == 'kernel':
      fan_in = int(np.prod(w.shape[:-1]))
      bound = 1.0 / np.sqrt(fan_in)
      leaf_key = jax.random.fold_in(key, zlib.crc32('/'.join(names).encode()) % 2**31)
      fresh = np.asarray(jax.random.uniform(leaf_key, w.shape, minval=-bound, maxval=bound),
                         w.dtype)
    else:
      fresh = np.zeros_like(w)
    return np.where(s > threshold, fresh, w)
  new = jax.tree_util.tree_map_with_path(reinit, params, salience)
  return {**variables, 'params': new}


@register('scissorhands', 'ScissorHands: SNIP-trim the most D_f-salient weights, then '
          'CE(D_r) - lam CE(D_f) with the update projected not to undo forgetting',
          ScissorHands)
def scissorhands(task: UnlearnTask, hp: ScissorHands):
  """ScissorHands (Wu & Harandi, ECCV 2024, arXiv 2401.06187; JingWu321/Scissorhands,
  ``unlearn/SHs_cifar10.py``): :func:`snip_reinit`, then ``epochs`` passes pairing each
  retain batch with a forget batch while the forget pass lasts (then retain-only steps),
  minimising ``CE(D_r) - forget_weight CE(D_f)``; with ``project``, each update of the last
  stages and head is projected by :func:`jaxunlearn.transforms.project_onto_forget_memory`
  against the forget gradient taken at the first step of its epoch (the reference takes it
  in eval mode on its own random batch; ours is that step's, train mode)."""
  prefixes = _last_stages(task, hp.last_stages)
  variables = per_model(task, lambda v: snip_reinit(task, v, hp.sparsity, hp.batch_size,
                                                    hp.snip_batches, prefixes, task.seed))
  every = num_batches(len(task.retain_y), hp.batch_size, task.parallel.size)
  optim = _sgd(hp, forget_weight=hp.forget_weight, retain_weight=1.0,
               project_every=every if hp.project else 0, project_prefixes=prefixes)
  variables, _ = fit_joint(variables, task.forget_phase(losses.gradient_ascent),
                           task.retain_phase(losses.cross_entropy), epochs=hp.epochs,
                           batch_size=hp.batch_size, optim=optim, cycle_forget=False,
                           **task.loop('scissorhands'))
  return variables


@dataclasses.dataclass(frozen=True)
class FisherForgetting(Hyperparameters):
  noise_scale: float = positive(0.2, "the noise's scale a: std sqrt(a / F), F the retain "
                                "set's Fisher diagonal (the reference's alpha)")
  max_std: float = positive(1e-3, 'largest noise std of a weight')
  head_factor: float = positive(10.0, "the head's noise std is this many times larger")
  batch_size: int = at_least_one(32, 'examples per batch of the per-example gradients')
  renamed = {'alpha': 'noise_scale'}


@register('fisher', 'Fisher forgetting: Gaussian noise on every weight, std min(sqrt(a / F_r), '
          'max_std) (SalUn code fisher)', FisherForgetting)
def fisher(task: UnlearnTask, hp: FisherForgetting):
  """Fisher forgetting as the SalUn code's ``unlearn/fisher.py`` runs it (after Golatkar et
  al., CVPR 2020): ``theta += min(sqrt(noise_scale / F), max_std) * N(0, 1)``, ``F`` the
  retain set's per-example Fisher diagonal
  (:func:`jaxunlearn.influence.fisher_diagonal_per_example`), the head's std times
  ``head_factor``. The reference multiplies where ``parameter.shape[-1] == 10``, which on
  CIFAR-10 catches only the head's bias and on CIFAR-100 nothing; its ``fisher_new`` scales
  the whole last layer, which is what we do."""
  def noisy(variables, key):
    f = jax.tree.map(np.asarray, fisher_diagonal_per_example(
        task.model, variables, task.retain_x, task.retain_y, hp.batch_size))

    def add(path, p, fi):
      std = np.minimum(np.sqrt(hp.noise_scale / fi), hp.max_std)
      if getattr(path[0], 'key', '') == 'head':
        std = std * hp.head_factor
      leaf_key = jax.random.fold_in(key, zlib.crc32(jax.tree_util.keystr(path).encode()))
      return (p + std * np.asarray(jax.random.normal(leaf_key, p.shape))).astype(p.dtype)
    params = jax.tree_util.tree_map_with_path(add, jax.tree.map(np.asarray, variables['params']),
                                              f)
    return {**variables, 'params': params}
  return per_model(task, lambda v: noisy(v, jax.random.key(task.seed)))
