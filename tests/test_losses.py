import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_adaptive_gradient_ascent_weights_hand_computed():
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0], [0.5, 0.5]])
  labels = jnp.array([0, 0, 0, 1])
  pad = jnp.array([1.0, 1.0, 1.0, 0.0])  # the last example is padding
  ce = np.asarray(losses.cross_entropy(logits, labels))[:3]
  loss = losses.AdaptiveGradientAscent(lam=0.5)
  c = 1 / (ce ** 0.5 + 1e-15)
  expected = -np.sum(c / c.sum() * ce)
  got = losses.reduce_loss(loss, loss(logits, labels), pad)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # The weights get no gradient: d/dlogits = -sum_i w_i dCE_i/dlogits.
  grad = jax.grad(lambda z: losses.reduce_loss(loss, loss(z, labels), pad))(logits)
  ce_grad = jax.vmap(jax.grad(lambda z, y: losses.cross_entropy(z[None], y[None])[0]))(
      logits, labels)
  np.testing.assert_allclose(grad[:3], -(c / c.sum())[:, None] * ce_grad[:3], rtol=1e-5)
  np.testing.assert_array_equal(grad[3], 0.0)
  # lambda = 0 is plain gradient ascent.
  ga = losses.AdaptiveGradientAscent(lam=0.0)
  np.testing.assert_allclose(losses.reduce_loss(ga, ga(logits, labels), pad), -ce.mean(),
                             rtol=1e-6)
  with pytest.raises(ValueError, match='lambda >= 0'):
    losses.AdaptiveGradientAscent(lam=-1.0)


def test_expected_random_label_ce_is_the_mean_over_wrong_labels():
  logits = jax.random.normal(jax.random.key(1), (6, 5))
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  by_hand = np.array([np.mean([float(losses.cross_entropy(logits[i:i + 1], jnp.array([c]))[0])
                               for c in range(5) if c != int(labels[i])]) for i in range(6)])
  np.testing.assert_allclose(losses.expected_random_label_cross_entropy(logits, labels),
                             by_hand, rtol=1e-5)
  # ... and so the mean of the RL loss over many draws of y' != y.
  draws = jax.vmap(lambda k: losses.random_label_cross_entropy(logits, labels, k))(
      jax.random.split(jax.random.key(2), 4000))
  np.testing.assert_allclose(draws.mean(0), by_hand, rtol=0.03)
