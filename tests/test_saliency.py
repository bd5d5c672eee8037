import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.models import make_model
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import (accumulate_gradients, fisher_diagonal, fisher_ratio_mask,
                                 mask_fraction, salun_mask, topk_gradient_mask)


def test_topk_is_global_and_exact():
  g = {'a': jnp.array([0.1, -5.0, 0.3]), 'b': jnp.array([[4.0, -0.2], [0.0, 1.0]])}
  m = topk_gradient_mask(g, keep=3 / 7)
  np.testing.assert_array_equal(m['a'], [0, 1, 0])
  np.testing.assert_array_equal(m['b'], [[1, 0], [0, 1]])
  assert mask_fraction(topk_gradient_mask(g, 1.0)) == 1.0


def test_topk_ties_are_deterministic_and_count_exact():
  g = {'a': jnp.ones(5), 'b': jnp.ones(5)}
  m = topk_gradient_mask(g, keep=0.3)
  np.testing.assert_array_equal(m['a'], [1, 1, 1, 0, 0])  # first entries win ties
  np.testing.assert_array_equal(m['b'], [0, 0, 0, 0, 0])
  big = {'x': jax.random.normal(jax.random.key(0), (1001,))}
  assert int(np.sum(topk_gradient_mask(big, 0.5)['x'])) == 500  # round(500.5) = 500


@pytest.mark.parametrize('keep', [0.0, -0.1, 1.5])
def test_topk_rejects_bad_fraction(keep):
  with pytest.raises(ValueError, match=r'\(0, 1\]'):
    topk_gradient_mask({'a': jnp.ones(3)}, keep)


def test_accumulated_gradient_is_sum_of_batch_means(toy):
  model = make_model('resnet1', toy.num_classes)
  variables = model.init(jax.random.key(0), toy.x_train[:1])
  x, y = toy.x_train[:20], toy.y_train[:20]
  acc = accumulate_gradients(Classifier(model, losses.gradient_ascent, train=False), variables,
                             x, y, batch_size=8)  # batches of 8, 8, 4

  def mean_loss(params, xb, yb):
    logits = model.apply({**variables, 'params': params}, xb, train=False)
    return losses.gradient_ascent(logits, yb).mean()

  expected = jax.tree.map(
      lambda *gs: sum(gs),
      *[jax.grad(mean_loss)(variables['params'], x[s:s + 8], y[s:s + 8]) for s in (0, 8, 16)])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), acc, expected)
  mask = salun_mask(Classifier(model, losses.gradient_ascent, train=False), variables, x, y,
                    keep=0.5, batch_size=8)
  n = sum(np.size(m) for m in jax.tree.leaves(mask))
  assert mask_fraction(mask) * n == pytest.approx(round(0.5 * n))


def test_fisher_diagonal_is_mean_of_squared_batch_gradients(toy):
  model = make_model('resnet1', toy.num_classes)
  variables = model.init(jax.random.key(0), toy.x_train[:1])
  x, y = toy.x_train[:20], toy.y_train[:20]

  def grad(lo, hi):
    def loss(params):
      logits = model.apply({**variables, 'params': params}, x[lo:hi], train=False)
      return losses.cross_entropy(logits, y[lo:hi]).mean()
    return jax.grad(loss)(variables['params'])

  expected = jax.tree.map(lambda a, b, c: (a**2 + b**2 + c**2) / 3,
                          grad(0, 8), grad(8, 16), grad(16, 20))
  got = fisher_diagonal(Classifier(model, losses.cross_entropy, train=False), variables, x, y,
                        batch_size=8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10), got,
               expected)


def test_fisher_ratio_mask_hand_computed_and_rejects_empty():
  f = {'a': jnp.array([1.0, 0.0, 2.0, 0.0])}
  r = {'a': jnp.array([2.0, 0.0, 1.0, 1.0])}
  np.testing.assert_array_equal(fisher_ratio_mask(f, r, 1.0)['a'], [0, 1, 1, 0])  # 0/0 -> 1
  np.testing.assert_array_equal(fisher_ratio_mask(f, r, 0.5)['a'], [1, 1, 1, 0])
  with pytest.raises(ValueError, match='selects no weight.*lower gamma'):
    fisher_ratio_mask(f, r, 10.0)
  with pytest.raises(ValueError, match='positive'):
    fisher_ratio_mask(f, r, 0.0)


def test_salun_mask_of_a_model_whose_call_takes_no_train():
  """A user's flax classifier without a ``train`` argument (no BatchNorm, no dropout):
  the objective calls it as it is, in eval and train mode."""
  import flax.linen as nn

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.relu(nn.Dense(8)(x.reshape((x.shape[0], -1)))))
  model = MLP()
  x = np.random.default_rng(0).normal(size=(12, 4, 4, 1)).astype(np.float32)
  y = np.arange(12, dtype=np.int32) % 3
  variables = model.init(jax.random.key(0), x[:1])
  mask = salun_mask(Classifier(model, losses.gradient_ascent, train=False), variables, x, y,
                    keep=0.5, batch_size=4)
  leaves = jax.tree.leaves(mask)
  assert 0 < sum(float(np.sum(m)) for m in leaves) < sum(m.size for m in leaves)
  loss, state, _ = Classifier(model, losses.cross_entropy)(variables['params'], {}, x, y,
                                                           jax.random.key(1))
  assert loss.shape == (12,) and state == {}
