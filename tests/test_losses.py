import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import losses


def test_cross_entropy_hand_computed():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([0, 2])
  expected = np.array([-2 + np.log(np.exp(2) + 2), np.log(3)])
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.gradient_ascent(logits, labels), -expected, rtol=1e-6)


def test_random_labels_exclude_true_label_and_cover_others():
  labels = jnp.zeros(5000, jnp.int32) + 3
  fake = np.asarray(losses.random_labels(jax.random.key(0), labels, 10))
  assert not np.any(fake == 3)
  assert set(np.unique(fake)) == set(range(10)) - {3}
  counts = np.bincount(fake, minlength=10)[np.arange(10) != 3]
  assert counts.min() > 0.8 * 5000 / 9  # roughly uniform over the 9 others


def test_random_labels_reference_mode_keeps_true_label():
  labels = jnp.zeros(5000, jnp.int32)
  fake = np.asarray(losses.random_labels(jax.random.key(1), labels, 10, exclude_true=False))
  assert 0.05 < np.mean(fake == 0) < 0.15


def test_weighted_mean_ignores_zero_weights_and_empty():
  np.testing.assert_allclose(losses.weighted_mean(jnp.array([1.0, 3.0, 100.0]),
                                                  jnp.array([1.0, 1.0, 0.0])), 2.0)
  assert float(losses.weighted_mean(jnp.ones(3), jnp.zeros(3))) == 0.0
