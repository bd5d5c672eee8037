"""Objectives: what a step minimises, the one thing a task adds to the shared core.

An objective is a frozen (hashable) dataclass that holds a model and a per-example loss and
is called as::

    objective(params, model_state, x, y, key) -> (per_example [B], new model_state, metrics)

``per_example`` are the losses of the batch's examples, ``metrics`` a dict of per-example
``[B]`` values to report (e.g. ``accuracy``). It has a ``loss`` attribute (its per-example
loss, whose optional ``example_weights(per_example)`` re-weights the batch: SFR-on's
adaptive weights) and ``on_axis(axis_name)``, the objective as a ``pmap`` step must see it.

The core (:mod:`jaxunlearn.step`) turns it into the batch objective
``params -> (loss, (model_state, metrics))``: padding weights, the global-batch
normalisation over devices and per-device random keys (:class:`jaxunlearn.parallel.ShardKey`)
are applied there, once, for every task. Keys may be a ``ShardKey``: per-example draws go
through :func:`jaxunlearn.parallel.draw`.

Objectives of the tasks:

- :class:`Classifier` (here): a loss on a classifier's logits (``loss(logits, y, key)``,
  :mod:`jaxunlearn.losses`), the model in train or eval mode.
- :class:`jaxunlearn.diffusion.objectives.Denoiser`: a loss on a noise-prediction model
  (``loss(eps_fn, schedule, x0, y, key)``: the denoising loss, SalUn's remapped class,
  Selective Amnesia's surrogate, SFR-on's adaptive ascent).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax.numpy as jnp

LossFn = Callable[[Any, Any, Any], Any]


def labels_of(y):
  """The integer labels of a batch's targets: ``y`` itself, or ``y['label']``."""
  return y['label'] if isinstance(y, dict) else y


def _takes_train(model) -> bool:
  """Whether ``model.__call__`` takes ``train`` (ours do; a plain ``nn.Dense`` stack or a
  user's module without BatchNorm or dropout may not)."""
  try:
    parameters = inspect.signature(type(model).__call__).parameters
  except (TypeError, ValueError):
    return True
  return 'train' in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A per-example loss on the logits of ``model`` (a flax classifier; ``train`` is passed
  when its ``__call__`` takes it).

  Attributes:
    model: the flax module, ``model.apply(variables, x, train=...) -> logits``.
    loss: ``loss(logits, y, key) -> [B]``, e.g. :func:`jaxunlearn.losses.cross_entropy`.
    train: train mode (BatchNorm uses and updates batch statistics) or eval mode (running
      statistics, model state unchanged: saliency and Fisher statistics).

  Metrics: ``accuracy`` (1 where the argmax is the label).
  """

  model: Any
  loss: LossFn
  train: bool = True

  def __call__(self, params, model_state, x, y, key):
    variables = {'params': params, **model_state}
    mode = {'train': self.train} if _takes_train(self.model) else {}
    if self.train and model_state:
      logits, new_state = self.model.apply(variables, x, mutable=list(model_state), **mode)
      new_state = dict(new_state)
    else:
      logits, new_state = self.model.apply(variables, x, **mode), model_state
    correct = (jnp.argmax(logits, -1) == labels_of(y)).astype(jnp.float32)
    return self.loss(logits, y, key), new_state, {'accuracy': correct}

  def on_axis(self, axis_name: str) -> Classifier:
    """The objective under ``pmap``: BatchNorm statistics averaged over ``axis_name``."""
    if not hasattr(self.model, 'axis_name'):
      raise ValueError(f'{type(self.model).__name__} has no axis_name attribute, so its batch '
                       "statistics cannot be synchronised under pmap; use parallel mode "
                       "'shard'")
    return dataclasses.replace(self, model=self.model.clone(axis_name=axis_name))
