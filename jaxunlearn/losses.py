"""Per-example losses on logits. Each returns a ``[B]`` array; callers reduce.

Every loss has the signature ``loss(logits, labels, key) -> [B]`` so that steps can treat
them alike (``key`` feeds losses that draw random labels; the others ignore it). The sign
convention is the one of DESIGN.md section 3: *minimising* a forget loss forgets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


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
  (``exclude_true=False`` reproduces that).
  """
  if exclude_true:
    shift = jax.random.randint(key, labels.shape, 1, num_classes)
    return (labels + shift) % num_classes
  return jax.random.randint(key, labels.shape, 0, num_classes)


def random_label_cross_entropy(logits, labels, key, exclude_true: bool = True):
  """CE against random labels (the RL / SalUn forget loss), per example."""
  fake = random_labels(key, labels, logits.shape[-1], exclude_true)
  return cross_entropy(logits, fake)


def random_label_cross_entropy_with_true(logits, labels, key):
  """RL loss with labels drawn from all classes, as in the SalUn reference code."""
  return random_label_cross_entropy(logits, labels, key, exclude_true=False)


def weighted_mean(per_example, weights):
  """Mean of ``per_example`` under 0/1 (or real) ``weights``; 0 when all weights are 0."""
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-12)
