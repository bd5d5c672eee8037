import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.models import ResNet18, make_model


def _count(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def test_resnet18_parameter_count_matches_pytorch():
  # The CIFAR ResNet-18 of SalUn / SFR-on: 11,173,962 trainable parameters for 10 classes.
  shapes = jax.eval_shape(lambda: ResNet18(num_classes=10).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert _count(shapes['params']) == 11_173_962
  # BatchNorm running statistics are buffers, not parameters: 2 per channel of 20 BNs.
  assert 'batch_stats' in shapes


def test_resnet18_cifar_stem_and_shapes():
  shapes = jax.eval_shape(lambda: ResNet18(num_classes=100).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  p = shapes['params']
  assert p['stem_conv']['kernel'].shape == (3, 3, 3, 64)  # 3x3 stem, not 7x7
  assert p['head']['kernel'].shape == (512, 100)
  assert p['stage2_block1']['shortcut_conv']['kernel'].shape == (1, 1, 64, 128)
  assert 'shortcut_conv' not in p['stage1_block1']


@pytest.mark.parametrize('name, width, size', [
    pytest.param('resnet18', 8, 16, marks=pytest.mark.slow), ('resnet10', 8, 8),
                                               ('resnet1', None, 8)])
def test_small_variants_forward(name, width, size):
  model = make_model(name, num_classes=7, width=width)
  x = jnp.ones((3, size, size, 1))
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  # Train mode updates BatchNorm statistics.
  _, updates = model.apply(variables, x * 2, train=True, mutable=['batch_stats'])
  before, after = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updates)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_unknown_model_lists_choices():
  with pytest.raises(ValueError, match='resnet18'):
    make_model('vgg', 10)
