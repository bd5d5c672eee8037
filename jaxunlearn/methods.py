"""Unlearning methods: a registry of short recipes.

A method is a function ``(task, hp) -> variables`` registered with its default
hyperparameters. ``hp`` is a plain dict: the defaults updated by the user's overrides
(``jaxunlearn run --set ft.lr=0.02``). Each recipe says which losses it minimises on which
data, in which order, with which optimizer.

Defaults follow the SalUn reference (arXiv 2310.12508, github OPTML-Group/Unlearn-Saliency):
SGD with momentum 0.9 and weight decay 5e-4 at a constant learning rate, FT 10 epochs at
lr 0.01, RL 10 epochs of a random-label forget pass then a retain pass. Batch size is 128
(the reference's 256 leaves too few steps per epoch on the 1.4k-example digits set); GA's
learning rate is scaled up for the same reason (the reference's 1e-4 for 5 epochs moves a
model by almost nothing in the 10 steps digits gives it).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
from typing import Any, Callable

import jax
import numpy as np

from jaxunlearn import losses
from jaxunlearn.influence import influence_direction
from jaxunlearn.objectives import Classifier
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.saliency import salun_mask, sfron_mask
from jaxunlearn.step import predict
from jaxunlearn.train import (FastSlowConfig, LoopControl, OptimConfig, Phase, TrainConfig,
                              fit, fit_fast_slow, fit_joint, init_variables, train_classifier)


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
  """A registered method: ``fn(task, hp) -> variables``, its defaults and a summary.

  ``registry`` is the table it is registered in: :data:`METHODS` (classification) or
  :data:`jaxunlearn.diffusion.unlearn.GENERATION_METHODS`.
  """

  name: str
  fn: Callable[[Any, dict], Any]
  defaults: dict
  summary: str
  registry: dict = dataclasses.field(default=None, repr=False, compare=False)

  def run(self, task, hp: dict):
    """Checks ``hp`` (names, types, ranges) and ``task`` (its ``validate()``), then
    unlearns; returns the new flax variables."""
    hp = resolve_hparams(self.name, hp, self.registry)
    task.validate()
    return self.fn(task, hp)


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, registry: dict | None = None, **defaults):
  """Decorator: registers ``fn(task, hp) -> variables`` as method ``name`` in ``registry``
  (default :data:`METHODS`)."""
  registry = METHODS if registry is None else registry

  def wrap(fn):
    if name in registry:
      raise ValueError(f'method {name!r} is registered twice')
    registry[name] = Method(name, fn, dict(defaults), summary, registry)
    return fn
  return wrap


def get_method(name: str, registry: dict | None = None) -> Method:
  registry = METHODS if registry is None else registry
  if name not in registry:
    raise ValueError(f'unknown method {name!r}{did_you_mean(name, registry)}; available: '
                     f'{", ".join(sorted(registry))}')
  return registry[name]


def resolve_hparams(name: str, overrides: dict | None = None,
                    registry: dict | None = None) -> dict:
  """The method's defaults updated by ``overrides``, each cast to its default's type.

  Raises:
    ValueError: an override names a hyperparameter the method does not have.
  """
  method = get_method(name, registry)
  hp = dict(method.defaults)
  for key, value in (overrides or {}).items():
    if key not in hp:
      raise ValueError(f'method {name!r} has no hyperparameter {key!r}{did_you_mean(key, hp)}; '
                       f'its hyperparameters are {", ".join(sorted(hp))}')
    hp[key] = cast_like(value, hp[key], f'{name}.{key}')
  for key, value in hp.items():
    if key in _RANGES and not _RANGES[key][0](value):
      raise ValueError(f'{name}.{key} must be {_RANGES[key][1]}, got {value!r}')
  return hp


def did_you_mean(word: str, choices) -> str:
  """' (did you mean 'x'?)' for the closest of ``choices``, or ''."""
  close = difflib.get_close_matches(word, list(choices), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


_positive = (lambda v: v > 0, '> 0')
_non_negative = (lambda v: v >= 0, '>= 0')
_at_least_one = (lambda v: v >= 1, '>= 1')
# Ranges of hyperparameters by name, checked for every method that has them (NaN fails all).
_RANGES = {
    'lr': _positive, 'inner_lr': _non_negative, 'epochs': _non_negative,
    'batch_size': _at_least_one, 'iterations': _at_least_one, 'every': _at_least_one,
    'msteps': _non_negative, 'momentum': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'weight_decay': _non_negative, 'clip_norm': _non_negative,
    'keep': (lambda v: 0 < v <= 1, 'a fraction in (0, 1] (the share of weights updated)'),
    'gamma': _positive, 'damping': _positive, 'solver_iters': _at_least_one,
    'temperature': _positive, 'num_samples': _at_least_one, 'bound': _non_negative,
    'steps': _at_least_one, 'alpha': _non_negative, 'lam': _non_negative,
    'strength': _non_negative, 'replay_per_class': _at_least_one,
    'fisher_timesteps': _at_least_one,
    'schedule': (lambda v: v in ('constant', 'cosine'), "'constant' or 'cosine'"),
    'forget_loss': (lambda v: v in ('rl', 'ga'), "'rl' or 'ga'"),
    'order': (lambda v: v in ('first', 'second'), "'first' or 'second'"),
    'virtual': (lambda v: v in ('retain', 'forget'), "'retain' or 'forget'"),
    'precondition': (lambda v: v in ('none', 'cg', 'neumann'), "'none', 'cg' or 'neumann'"),
}


def cast_like(value, default, where: str):
  """Casts a command-line string to the type of ``default`` (bools: true/false/1/0)."""
  if not isinstance(value, str):
    return value
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'{where} must be true or false, got {value!r}')
    return value.lower() in ('true', '1')
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(f'{where} must be a {type(default).__name__}, got {value!r}') from None


def _one(task: UnlearnTask) -> Parallel:
  """The devices of one model's pre-loop computations (an ensemble's run one by one)."""
  return SINGLE if task.parallel.is_ensemble else task.parallel


def _sgd(hp, **options) -> OptimConfig:
  return OptimConfig(hp['lr'], hp['momentum'], hp['weight_decay'], hp['schedule'], **options)


def _fit(task: UnlearnTask, hp: dict, phases, desc: str, variables=None, mask=None,
         **options):
  """``fit`` from the original (or ``variables``) with the method's SGD."""
  variables, _ = fit(task.variables if variables is None else variables, phases,
                     epochs=hp['epochs'], batch_size=hp['batch_size'],
                     optim=_sgd(hp, **options), mask=mask, **task.loop(desc))
  return variables


def _forget_loss(hp):
  """Random-label CE, excluding the true label unless ``exclude_true_label`` is false."""
  return (losses.random_label_cross_entropy if hp['exclude_true_label'] else
          losses.random_label_cross_entropy_with_true)


def _logits(task: UnlearnTask, variables, x):
  return predict(task.model, variables, x, parallel=task.parallel)


_SGD = dict(momentum=0.9, weight_decay=5e-4, schedule='constant', batch_size=128)


@register('retrain', 'Retrain from scratch on D_r (the gold standard)',
          **dataclasses.asdict(TrainConfig()))
def retrain(task: UnlearnTask, hp: dict):
  return train_classifier(task.model, task.retain_x, task.retain_y, TrainConfig(**hp),
                          **task.loop('retrain'))


@register('ft', 'Fine-tune: CE on D_r', lr=0.01, epochs=10, **_SGD)
def ft(task: UnlearnTask, hp: dict):
  return _fit(task, hp, [task.retain_phase(losses.cross_entropy)], 'ft')


@register('ga', 'Gradient ascent: -CE on D_f', lr=0.005, epochs=5, **_SGD)
def ga(task: UnlearnTask, hp: dict):
  return _fit(task, hp, [task.forget_phase(losses.gradient_ascent)], 'ga')


def _salun_mask(task: UnlearnTask, hp: dict):
  """SalUn's mask: top ``keep`` of |sum of grad(-CE) over D_f|, eval mode (each model's)."""
  objective = task.statistic(losses.gradient_ascent)
  return per_model(task, lambda v: salun_mask(objective, v, task.forget_x, task.forget_y,
                                              hp['keep'], hp['batch_size'],
                                              parallel=_one(task)))


def _rl_phases(task: UnlearnTask, hp: dict):
  return [task.forget_phase(_forget_loss(hp)), task.retain_phase(losses.cross_entropy)]


@register('rl', 'Random labels on D_f, then CE on D_r, each epoch', lr=0.01, epochs=10,
          exclude_true_label=True, **_SGD)
def rl(task: UnlearnTask, hp: dict):
  return _fit(task, hp, _rl_phases(task, hp), 'rl')


@register('salun', 'SalUn: RL passes updating only the top-`keep` salient weights (|grad -CE|)',
          lr=0.013, epochs=10, keep=0.5, exclude_true_label=True, **_SGD)
def salun(task: UnlearnTask, hp: dict):
  """SalUn (Fan et al., ICLR 2024, arXiv 2310.12508), as its reference code runs it.

  Mask: top ``keep`` of |sum over D_f batches of grad(-CE)| at the original model, eval
  mode, ranked over all parameters. Then each epoch a random-label pass over D_f and a CE
  pass over D_r, gradients masked before SGD; ``mask_by_saliency(freeze=True)`` wraps the
  optimizer so that masked weights stay exactly at their original values.
  """
  mask = _salun_mask(task, hp)
  return _fit(task, hp, _rl_phases(task, hp), 'salun', mask=mask, saliency=True)


@register('salun_joint', 'SalUn, one joint step: CE(x_f, y\') + alpha CE(x_r, y_r), masked',
          lr=0.013, epochs=10, keep=0.5, alpha=1.0, exclude_true_label=True, **_SGD)
def salun_joint(task: UnlearnTask, hp: dict):
  """SalUn's objective ``L = CE(x_f, y') + alpha CE(x_r, y_r)`` minimised in joint steps:
  ``combine_forget_retain(1, alpha)`` then the masked optimizer."""
  variables, _ = fit_joint(
      task.variables, task.forget_phase(_forget_loss(hp)),
      task.retain_phase(losses.cross_entropy), epochs=hp['epochs'],
      batch_size=hp['batch_size'],
      optim=_sgd(hp, saliency=True, forget_weight=1.0, retain_weight=hp['alpha']),
      mask=_salun_mask(task, hp), **task.loop('salun_joint'))
  return variables


_SFRON = dict(lr=0.01, iterations=100, alpha=25.0, lam=0.5, gamma=1.0, mask=True,
              clip_norm=7.0, **dict(_SGD, schedule='cosine'))


def _sfron(task: UnlearnTask, hp: dict, desc: str, **options):
  mask = None
  if hp['mask']:
    mask = per_model(task, lambda v: sfron_mask(
        task.statistic(losses.cross_entropy), v, task.forget_x, task.forget_y, task.retain_x,
        task.retain_y, hp['gamma'], hp['batch_size'], parallel=_one(task)))
  config = FastSlowConfig(hp['lr'], hp['momentum'], hp['weight_decay'], hp['schedule'],
                          hp['iterations'], hp['every'], hp['alpha'], 'cosine', hp['clip_norm'],
                          saliency=hp['mask'], **options)
  variables, _ = fit_fast_slow(
      task.variables, task.forget_phase(losses.AdaptiveGradientAscent(hp['lam'])),
      task.retain_phase(losses.cross_entropy), config=config,
      batch_size=hp['batch_size'], mask=mask, **task.loop(desc))
  return variables


@register('sfron', 'SFR-on: adaptive-weighted masked ascent every K-th step, retain descent '
          'every step (fast-slow)', every=5, **_SFRON)
def sfron(task: UnlearnTask, hp: dict):
  """SFR-on (Huang et al., NeurIPS 2024, arXiv 2409.19732) as its reference code runs it:
  Fisher-ratio mask ``F_f / F_r >= gamma`` (eval mode), then ``iterations`` iterations of
  a retain CE step, preceded every ``every``-th by an ascent step on the adaptive weighted
  loss (``lam``), scaled by the cosine-decayed ``alpha``, masked, clipped to ``clip_norm``;
  one SGD state for both. CIFAR-10 settings; ``iterations`` scaled to digits (100
  iterations = 10 passes over its retain set, as FT's 10 epochs)."""
  return _sfron(task, hp, 'sfron')


@register('sfron_hvp', 'SFR-on with the explicit remain-Hessian preconditioner on each forget '
          'step (CG on H_r + damping I)', every=1, precondition='cg', damping=1.0,
          solver_iters=5, recompute=False, **dict(_SFRON, iterations=20))
def sfron_hvp(task: UnlearnTask, hp: dict):
  """SFR-on with its remain geometry made explicit: every forget step's direction is
  filtered by ``damping (H_r + damping I)^-1`` (``solver_iters`` CG or Neumann iterations
  of Hessian-vector products on the current retain batch) before the mask and clip, in
  place of the implicit ``(I - lr H_r)^K`` of the fast-slow schedule, so a forget step can
  come every iteration (``every=1``). ``recompute=true`` recomputes the remain pass in every
  product instead of storing its linearisation (memory for compute, for large models)."""
  return _sfron(task, hp, 'sfron_hvp', precondition=hp['precondition'], damping=hp['damping'],
                solver_iters=hp['solver_iters'], recompute=hp['recompute'])


@register('lur', "LUR: joint steps on w_r L_R(theta) + w_u L_U(theta - eta grad L_R(theta))",
          lr=0.01, epochs=10, inner_lr=0.01, order='second', virtual='retain', forget_loss='rl',
          forget_weight=1.0, retain_weight=1.0, exclude_true_label=True, **_SGD)
def lur(task: UnlearnTask, hp: dict):
  """LUR (Patel & Qiu, ICCV 2025, arXiv 2503.06339; code unreleased): each retain batch is
  paired with a forget batch and one SGD step follows the gradient of the look-ahead
  objective (``align_forget_retain``: ``w_r g_R + w_u (I - eta H_R) grad L_U(theta')``,
  ``order='first'`` without the HVP). ``forget_loss``: 'rl' (random-label CE) or 'ga'."""
  forget = _forget_loss(hp) if hp['forget_loss'] == 'rl' else losses.gradient_ascent
  variables, _ = fit_joint(
      task.variables, task.forget_phase(forget), task.retain_phase(losses.cross_entropy),
      epochs=hp['epochs'],
      batch_size=hp['batch_size'],
      optim=_sgd(hp, forget_weight=hp['forget_weight'], retain_weight=hp['retain_weight'],
                 lookahead_lr=hp['inner_lr'], lookahead_order=hp['order'],
                 lookahead_virtual=hp['virtual']), **task.loop('lur'))
  return variables


@register('l1_sparse', 'FT with an l1 penalty decaying linearly to 0 (Jia et al. 2023)',
          lr=0.01, epochs=10, alpha=1e-4, **_SGD)
def l1_sparse(task: UnlearnTask, hp: dict):
  """``CE(D_r) + alpha_t ||theta||_1``; ``alpha_t`` decays linearly to 0 over the run
  (the reference steps it per epoch; we decay per step)."""
  steps = hp['epochs'] * -(-len(task.retain_y) // hp['batch_size'])
  return _fit(task, hp, [task.retain_phase(losses.cross_entropy)],
              'l1_sparse', l1=hp['alpha'], l1_decay_steps=steps)


@register('iu', 'Influence unlearning: one WoodFisher (inverse-Fisher) Newton step',
          alpha=10.0, damping=1.0, num_samples=256)
def iu(task: UnlearnTask, hp: dict):
  """``theta += alpha F^{-1} (g_f - g_r)`` (see :mod:`jaxunlearn.influence`)."""
  direction = influence_direction(task.model, task.variables, task.forget_x, task.forget_y,
                                  task.retain_x, task.retain_y, num_samples=hp['num_samples'],
                                  damping=hp['damping'])
  params = jax.tree.map(lambda p, d: p + hp['alpha'] * np.asarray(d, p.dtype),
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


@register('bs', 'Boundary Shrink: train D_f toward its FGSM neighbour\'s label (Chen et al. 2023)',
          lr=0.01, epochs=10, bound=0.1, **_SGD)
def bs(task: UnlearnTask, hp: dict):
  """Boundary Shrink (arXiv 2303.11570): the frozen original labels an FGSM step (bound 0.1)
  from each forget example; the model is trained on D_f with those labels. Our inputs are
  standardized, so ``bound`` is in standardized units and no [0, 1] clamp or 8-bit
  rounding applies (the reference attacks raw [0, 1] pixels)."""
  adv = fgsm_labels(task.model, task.variables, task.forget_x, task.forget_y, hp['bound'])
  return _fit(task, hp, [task.phase(task.forget_x, adv, losses.cross_entropy, 'forget')], 'bs')


@register('be', 'Boundary Expanding: D_f to an extra shadow class, then drop it',
          lr=0.01, epochs=10, **_SGD)
def be(task: UnlearnTask, hp: dict):
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


@register('scrub', 'SCRUB: max KL to the teacher on D_f (first msteps epochs), min CE+KL on D_r',
          lr=0.0005, epochs=6, msteps=2, gamma=0.99, alpha=0.001, temperature=4.0,
          **dict(_SGD, schedule='cosine'))
def scrub(task: UnlearnTask, hp: dict):
  """SCRUB (Kurmanji et al., NeurIPS 2023, arXiv 2302.09880), student = the original,
  teacher = the frozen original; its forget "max" pass runs in the first ``msteps`` epochs,
  the retain "min" pass every epoch; CIFAR-10 settings of SFR-on's code, lr scaled for
  digits."""
  teacher = lambda x, y: {'label': y, 'teacher': _logits(task, task.variables, x)}
  phases = [task.phase(task.forget_x, teacher(task.forget_x, task.forget_y),
                       losses.DistillKL(hp['temperature'], sign=-1.0), 'forget',
                       epochs=hp['msteps']),
            task.phase(task.retain_x, teacher(task.retain_x, task.retain_y),
                       losses.ScrubRetainLoss(hp['gamma'], hp['alpha'], hp['temperature']),
                       'retain')]
  return _fit(task, hp, phases, 'scrub')


@register('bad_teacher', 'Bad Teacher: distil the original on D_r, a random model on D_f',
          lr=0.02, epochs=10, temperature=1.0, **dict(_SGD, schedule='cosine'))
def bad_teacher(task: UnlearnTask, hp: dict):
  """Bad Teacher (Chundawat et al., AAAI 2023, arXiv 2205.08096): on D_r + D_f shuffled
  together, the student matches the competent teacher (the original) on retain examples and
  an incompetent, randomly initialised one on forget examples."""
  random_model = init_variables(task.model, task.forget_x.shape[1:], task.seed + 1)
  t = hp['temperature']
  soft = lambda logits: np.asarray(jax.nn.softmax(logits / t, axis=-1))
  x = np.concatenate([task.retain_x, task.forget_x])
  probs = np.concatenate([soft(_logits(task, task.variables, task.retain_x)),
                          soft(_logits(task, random_model, task.forget_x))])
  y = {'label': np.concatenate([task.retain_y, task.forget_y]), 'teacher_probs': probs}
  return _fit(task, hp, [task.phase(x, y, losses.TeacherKL(t), 'mixed')], 'bad_teacher')
