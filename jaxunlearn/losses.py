"""Per-example losses on logits. Each returns a ``[B]`` array; callers reduce.

Every loss has the signature ``loss(logits, labels, key) -> [B]`` so that steps can treat
them alike (``key`` feeds losses that draw random labels; the others ignore it). The sign
convention is the transforms' (docs/architecture.md): *minimising* a forget loss forgets.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.parallel import draw


def cross_entropy(logits, labels, key=None):
  """Softmax cross-entropy with integer labels, per example."""
  del key
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def gradient_ascent(logits, labels, key=None):
  """``-CE``: minimising it ascends the cross-entropy of the forget examples (GA)."""
  return -cross_entropy(logits, labels, key)


def random_labels(key, labels, num_classes: int, exclude_true: bool = True):
  """Uniform random labels; with ``exclude_true`` never the true label.

  ``exclude_true=True`` is the paper's y' != y (SalUn, arXiv 2310.12508, eq. 4); the SalUn
  reference code draws ``randint(0, C)`` and so keeps the true label with probability 1/C
  (``exclude_true=False`` reproduces that). ``key`` may be a
  :class:`jaxunlearn.parallel.ShardKey` (under ``pmap``): the draws are then those of the
  whole global batch, sliced to this device's examples.
  """
  low = 1 if exclude_true else 0
  draws = draw(key, lambda k, shape: jax.random.randint(k, shape, low, num_classes),
               labels.shape)
  return (labels + draws) % num_classes if exclude_true else draws


def random_label_cross_entropy(logits, labels, key, exclude_true: bool = True):
  """CE against random labels (the RL / SalUn forget loss), per example."""
  fake = random_labels(key, labels, logits.shape[-1], exclude_true)
  return cross_entropy(logits, fake)


def random_label_cross_entropy_with_true(logits, labels, key):
  """RL loss with labels drawn from all classes, as in the SalUn reference code."""
  return random_label_cross_entropy(logits, labels, key, exclude_true=False)


def expected_random_label_cross_entropy(logits, labels, key=None):
  """The expectation over ``y' != y`` (uniform) of the RL loss ``CE(logits, y')``, per
  example: ``-mean_{c != y} log softmax(logits)_c``. Its gradient is the expected RL
  forget gradient, without the noise of one draw (used to measure gradient alignment)."""
  del key
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  wrong = 1.0 - jax.nn.one_hot(labels, num_classes, dtype=log_p.dtype)
  return -jnp.sum(log_p * wrong, axis=-1) / (num_classes - 1)


def weighted_mean(per_example, weights, axis_name: str | None = None):
  """Mean of ``per_example`` under 0/1 (or real) ``weights``; 0 when all weights are 0.

  Under ``pmap`` (``axis_name``), each device returns its share scaled so that the
  ``lax.pmean`` over devices of the result (and of its gradient) is the weighted mean over
  the global batch: ``size * sum_local(l w) / sum_global(w)``.
  """
  total = jnp.sum(per_example * weights)
  norm = jnp.sum(weights)
  if axis_name is not None:
    norm = jax.lax.psum(norm, axis_name) / jax.lax.psum(1, axis_name)
  return total / jnp.maximum(norm, 1e-12)


def reduce_loss(loss_fn, per_example, weights, axis_name: str | None = None):
  """The batch loss: ``weighted_mean`` of ``per_example`` under ``weights`` (0 for padding),
  times the loss's own per-example weights when it defines ``example_weights`` (SFR-on's
  adaptive weights, normalised over the valid examples of the batch: of the global batch
  under ``pmap``)."""
  if hasattr(loss_fn, 'example_weights'):
    weights = weights * jax.lax.stop_gradient(loss_fn.example_weights(per_example))
  return weighted_mean(per_example, weights, axis_name)


def _distill_kl(student_logits, teacher_probs, temperature):
  """Per-example KL(teacher || softmax(student / T)), in nats."""
  log_s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_t = jnp.log(jnp.maximum(teacher_probs, 1e-30))
  return jnp.sum(jnp.where(teacher_probs > 0, teacher_probs * (log_t - log_s), 0.0), axis=-1)


# Losses with hyperparameters are frozen dataclasses: hashable by value, so the compiled
# step that closes over one is reused by every run with the same settings.


@dataclasses.dataclass(frozen=True)
class MixedRandomLabels:
  """RL's loss on one shuffled pass over D_f and D_r together (the SalUn reference's
  CIFAR-100 / Tiny-ImageNet branch): per example, CE against a random label where
  ``targets['forget']`` is 1, against the true ``targets['label']`` where it is 0."""

  exclude_true: bool = True

  def __call__(self, logits, targets, key):
    labels, forget = targets['label'], targets['forget']
    fake = random_labels(key, labels, logits.shape[-1], self.exclude_true)
    return cross_entropy(logits, jnp.where(forget > 0, fake, labels))


@dataclasses.dataclass(frozen=True)
class DistillKL:
  """Knowledge distillation ``T^2 KL(softmax(t/T) || softmax(s/T))`` per example.

  ``targets['teacher']`` holds the teacher's logits. ``sign=-1`` gives SCRUB's forget
  ("max") loss. Per-example sums over classes, i.e. PyTorch's ``reduction='batchmean'``.
  """

  temperature: float = 4.0
  sign: float = 1.0

  def __call__(self, logits, targets, key=None):
    teacher = jax.nn.softmax(targets['teacher'] / self.temperature, axis=-1)
    return self.sign * self.temperature**2 * _distill_kl(logits, teacher, self.temperature)


@dataclasses.dataclass(frozen=True)
class ScrubRetainLoss:
  """SCRUB's retain ("min") loss: ``ce_weight CE(s, y) + kl_weight T^2 KL(t || s)``
  (arXiv 2302.09880; its code's ``gamma`` and ``alpha``)."""

  ce_weight: float = 0.99
  kl_weight: float = 0.001
  temperature: float = 4.0

  def __call__(self, logits, targets, key=None):
    ce = cross_entropy(logits, targets['label'])
    return self.ce_weight * ce + self.kl_weight * DistillKL(self.temperature)(logits, targets)


@dataclasses.dataclass(frozen=True)
class TeacherKL:
  """``KL(targets['teacher_probs'] || softmax(s / T))`` per example (Bad Teacher).

  The probabilities are already tempered and mixed per example (competent teacher on
  D_r, incompetent one on D_f). SFR-on's code uses PyTorch's ``kl_div`` default reduction
  'mean', which also divides by the number of classes; we use the per-example KL.
  """

  temperature: float = 1.0

  def __call__(self, logits, targets, key=None):
    return _distill_kl(logits, targets['teacher_probs'], self.temperature)


@dataclasses.dataclass(frozen=True)
class AdaptiveGradientAscent:
  """SFR-on's adaptive weighted forgetting loss (Huang et al., arXiv 2409.19732, eq. 11).

  Per example it is ``-l_i`` (``l_i`` the cross-entropy); :func:`reduce_loss` weights the
  examples by ``c_i = 1 / (l_i^lambda + eps)`` (no gradient through ``c``), normalised over
  the batch, so the batch loss is ``-sum_i w_i l_i`` with ``w = softmax(-lambda log l)``:
  forget examples the model still fits (small ``l_i``) get most of the push. ``lam=0`` is
  plain gradient ascent. ``eps`` is the reference code's ``1e-15``.
  """

  lam: float = 0.5
  eps: float = 1e-15

  def __post_init__(self):
    if self.lam < 0:
      raise ValueError(f'adaptive forget weighting needs lambda >= 0, got {self.lam}')

  def __call__(self, logits, labels, key=None):
    return -cross_entropy(logits.astype(jnp.float32), labels)

  def example_weights(self, per_example):
    ce = jnp.maximum(-per_example, 0.0)  # CE >= 0; clamp rounding below 0
    return 1.0 / (ce ** self.lam + self.eps)
