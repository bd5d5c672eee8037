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
from typing import Any, Callable

import numpy as np

from jaxunlearn import losses
from jaxunlearn.train import OptimConfig, Phase, TrainConfig, fit, train_classifier


@dataclasses.dataclass(frozen=True)
class UnlearnTask:
  """What every method receives: the model, the original weights and the data.

  Attributes:
    model: the flax module.
    variables: the original (trained on D_f + D_r) flax variables.
    forget_x, forget_y: the forget set D_f.
    retain_x, retain_y: the retain set D_r.
    num_classes: number of classes of the head.
    seed: the run's seed; methods derive all randomness from it.
    progress: show a progress bar.
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


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  run: Callable[[UnlearnTask, dict], Any]
  defaults: dict
  summary: str


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, **defaults):
  """Decorator: registers ``fn(task, hp) -> variables`` as method ``name``."""
  def wrap(fn):
    if name in METHODS:
      raise ValueError(f'method {name!r} is registered twice')
    METHODS[name] = Method(name, fn, dict(defaults), summary)
    return fn
  return wrap


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; available: {", ".join(sorted(METHODS))}')
  return METHODS[name]


def resolve_hparams(name: str, overrides: dict | None = None) -> dict:
  """The method's defaults updated by ``overrides``, each cast to its default's type.

  Raises:
    ValueError: an override names a hyperparameter the method does not have.
  """
  method = get_method(name)
  hp = dict(method.defaults)
  for key, value in (overrides or {}).items():
    if key not in hp:
      raise ValueError(f'method {name!r} has no hyperparameter {key!r}; its hyperparameters '
                       f'are {", ".join(sorted(hp))}')
    hp[key] = cast_like(value, hp[key], f'{name}.{key}')
  return hp


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


def _sgd(hp) -> OptimConfig:
  return OptimConfig(hp['lr'], hp['momentum'], hp['weight_decay'], hp['schedule'])


def _fit(task: UnlearnTask, hp: dict, phases, desc: str):
  variables, _ = fit(task.model, task.variables, phases, epochs=hp['epochs'],
                     batch_size=hp['batch_size'], optim=_sgd(hp), seed=task.seed, desc=desc,
                     progress=task.progress)
  return variables


_SGD = dict(momentum=0.9, weight_decay=5e-4, schedule='constant', batch_size=128)


@register('retrain', 'Retrain from scratch on D_r (the gold standard)',
          **dataclasses.asdict(TrainConfig()))
def retrain(task: UnlearnTask, hp: dict):
  return train_classifier(task.model, task.retain_x, task.retain_y, TrainConfig(**hp),
                          seed=task.seed, desc='retrain', progress=task.progress)


@register('ft', 'Fine-tune: CE on D_r', lr=0.01, epochs=10, **_SGD)
def ft(task: UnlearnTask, hp: dict):
  return _fit(task, hp, [Phase(task.retain_x, task.retain_y, losses.cross_entropy, 'retain')],
              'ft')


@register('ga', 'Gradient ascent: -CE on D_f', lr=0.005, epochs=5, **_SGD)
def ga(task: UnlearnTask, hp: dict):
  return _fit(task, hp, [Phase(task.forget_x, task.forget_y, losses.gradient_ascent, 'forget')],
              'ga')


@register('rl', 'Random labels on D_f, then CE on D_r, each epoch', lr=0.01, epochs=10,
          exclude_true_label=True, **_SGD)
def rl(task: UnlearnTask, hp: dict):
  forget_loss = (losses.random_label_cross_entropy if hp['exclude_true_label'] else
                 losses.random_label_cross_entropy_with_true)
  return _fit(task, hp, [Phase(task.forget_x, task.forget_y, forget_loss, 'forget'),
                         Phase(task.retain_x, task.retain_y, losses.cross_entropy, 'retain')],
              'rl')
