"""Forget/retain gradient alignment along an unlearning run.

The quantity LUR exists to improve: the cosine between the gradient of the forget loss and
the gradient of the retain loss at the current weights. A negative cosine means a step that
forgets also un-learns the retain set; LUR's look-ahead objective
``L_R(theta) + L_U(theta - eta grad L_R)`` ~ ``L_R + L_U - eta <grad L_U, grad L_R>``
rewards aligning them.

To compare methods fairly, :class:`GradientAlignment` measures every method on the same
fixed probe batches with the same losses: the expected random-label CE on the forget batch
(the RL / SalUn / LUR forget loss without the noise of one label draw) and CE on the retain
batch, model in train mode (BatchNorm on the batch's statistics, as in the steps).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import losses
from jaxunlearn.objectives import Classifier
from jaxunlearn.step import batch_objective, tree_cosine


def _batch_grad(model, model_state, params, batch, loss_fn):
  objective = batch_objective(Classifier(model, loss_fn), model_state, batch,
                              jax.random.key(0))  # the key: unused by the default losses
  return jax.grad(lambda p: objective(p)[0])(params)


@functools.lru_cache(maxsize=16)
def _compiled_cosine(model, forget_loss, retain_loss):
  """``(variables, forget_batch, retain_batch) -> cosine``.

  When neither loss weights its examples (``example_weights``), both gradients come from
  one compiled program, called twice with a flag that picks the loss per call (the loss not
  picked gets a zero cotangent, so the gradient is the picked loss's): one compile instead
  of two. Otherwise, one program computes both."""
  if hasattr(forget_loss, 'example_weights') or hasattr(retain_loss, 'example_weights'):
    def cosine(variables, forget_batch, retain_batch):
      model_state = {k: v for k, v in variables.items() if k != 'params'}
      params = variables['params']
      return tree_cosine(_batch_grad(model, model_state, params, forget_batch, forget_loss),
                         _batch_grad(model, model_state, params, retain_batch, retain_loss))
    return jax.jit(cosine)

  @jax.jit
  def grad(variables, batch, is_forget):
    def loss(logits, y, key):
      return jnp.where(is_forget, forget_loss(logits, y, key), retain_loss(logits, y, key))
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    return _batch_grad(model, model_state, variables['params'], batch, loss)

  def cosine(variables, forget_batch, retain_batch):
    return _host_cosine(grad(variables, forget_batch, True), grad(variables, retain_batch, False))
  return cosine


def _host_cosine(a, b) -> float:
  """:func:`tree_cosine` on the host in float64: a ResNet-18's ~60 gradient tensors as one
  vector, without compiling a program of ~60 reductions for it (0.7 s)."""
  flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                      for x in jax.tree.leaves(tree)])
  a, b = flat(a), flat(b)
  norm = float(np.linalg.norm(a) * np.linalg.norm(b))
  return float(a @ b) / norm if norm > 0 else 0.0


class GradientAlignment:
  """``probe(variables) -> cosine`` between forget and retain gradients on fixed batches.

  Args:
    model: the flax module.
    forget_x, forget_y, retain_x, retain_y: the two sets; ``batch_size`` examples of each
      (fewer if a set is smaller), drawn once with ``seed``, are the probe batches.
    forget_loss, retain_loss: per-example losses (defaults: expected random-label CE, CE).

  Also a ``UnlearnTask.callback``: ``probe(steps, variables)`` appends ``(steps, cosine)``
  to ``probe.steps`` / ``probe.cosines`` and the time it took to ``probe.seconds`` (so that
  a run's time can exclude the measurement); ``state_dict`` / ``load_state_dict`` carry
  that record through a loop's checkpoint.
  """

  def __init__(self, model, forget_x, forget_y, retain_x, retain_y, *, batch_size: int = 128,
               seed: int = 0, forget_loss=losses.expected_random_label_cross_entropy,
               retain_loss=losses.cross_entropy):
    if len(forget_y) == 0 or len(retain_y) == 0:
      raise ValueError('gradient alignment needs a non-empty forget and retain set')
    rng = np.random.default_rng([seed, 7])

    def batch(x, y):
      idx = np.sort(rng.permutation(len(y))[:min(batch_size, len(y))])
      return (jnp.asarray(x[idx]), jnp.asarray(y[idx]), jnp.ones(len(idx), jnp.float32))

    self._forget, self._retain = batch(forget_x, forget_y), batch(retain_x, retain_y)
    self._fn = _compiled_cosine(model, forget_loss, retain_loss)
    self.steps: list[int] = []
    self.cosines: list[float] = []
    self.seconds = 0.0

  def cosine(self, variables) -> float:
    """The cosine at ``variables`` (a flax variables dict)."""
    return float(self._fn(variables, self._forget, self._retain))

  def __call__(self, steps: int, variables) -> None:
    start = time.perf_counter()
    self.steps.append(int(steps))
    self.cosines.append(self.cosine(variables))
    self.seconds += time.perf_counter() - start

  def state_dict(self) -> dict:
    """What it has recorded (a loop checkpoint saves it; see ``LoopCheckpoint``)."""
    return {'steps': list(self.steps), 'cosines': list(self.cosines), 'seconds': self.seconds}

  def load_state_dict(self, state: dict) -> None:
    """Continues from a :meth:`state_dict` (a loop resumed from its checkpoint)."""
    self.steps = [int(v) for v in state['steps']]
    self.cosines = [float(v) for v in state['cosines']]
    self.seconds = float(state['seconds'])
