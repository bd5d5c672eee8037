"""jaxunlearn.models.conv: the im2col lowering equals lax's convolution, and 'auto' picks it
only where it is meant to."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxunlearn.models import conv as conv_lib
from jaxunlearn.models.resnet import ResNet

NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.fixture(autouse=True)
def _reset_mode():
  yield
  conv_lib.set_cpu_conv(None)


def _data(shape, kernel, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel) / np.sqrt(np.prod(kernel[:3])), jnp.float32)
  return x, w


def _primitives(fn, *args):
  # A fresh function each time: JAX reuses a function's trace, and the mode is read when
  # a convolution is traced.
  return {str(e.primitive) for e in jax.make_jaxpr(lambda *a: fn(*a))(*args).jaxpr.eqns}


def _convolutions(fn, *args):
  """How many convolutions ``fn``'s program holds (nested jaxprs included)."""
  return str(jax.make_jaxpr(fn)(*args)).count('conv_general_dilated[')


@pytest.mark.parametrize('shape, kernel, strides, padding', [
    ((3, 7, 6, 4), (3, 3, 4, 5), (1, 1), ((1, 1), (1, 1))),
    ((3, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1))),
    ((2, 9, 7, 3), (3, 3, 3, 2), (2, 1), ((0, 2), (1, 0))),
    ((2, 8, 8, 3), (1, 1, 3, 6), (2, 2), ((0, 0), (0, 0))),
    ((2, 6, 6, 3), (1, 3, 3, 4), (1, 1), 'SAME'),
    ((2, 9, 9, 3), (5, 5, 3, 4), (2, 2), 'SAME'),
    ((2, 6, 7, 3), (3, 2, 3, 4), (1, 2), 'VALID'),
])
def test_im2col_equals_lax_values_and_gradients(shape, kernel, strides, padding):
  x, w = _data(shape, kernel)
  conv_lib.set_cpu_conv('im2col')
  ours = lambda x, w: conv_lib.conv_general_dilated(x, w, strides, padding,
                                                    dimension_numbers=NHWC)
  theirs = lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                                 dimension_numbers=NHWC)
  assert 'conv_general_dilated' not in _primitives(ours, x, w)
  want = theirs(x, w)
  got = ours(x, w)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  probe = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
  grads = lambda f: jax.grad(lambda x, w: jnp.vdot(f(x, w), probe), argnums=(0, 1))(x, w)
  for g_ours, g_theirs in zip(grads(ours), grads(theirs)):
    np.testing.assert_allclose(g_ours, g_theirs, atol=1e-5, rtol=1e-5)


def test_auto_takes_the_product_only_on_small_maps():
  conv = lambda x, w, s=(1, 1): conv_lib.conv_general_dilated(x, w, s, ((1, 1), (1, 1)),
                                                              dimension_numbers=NHWC)
  tiny = _data((2, 2, 2, 512), (3, 3, 512, 8))          # 2x2 output: always the product
  small = _data((4, 4, 4, 64), (3, 3, 64, 64))          # 16 px x 576 = 9216 values
  large = _data((4, 16, 16, 16), (3, 3, 16, 16))        # 256 px x 144 = 36,864 values
  pointwise = _data((4, 16, 16, 16), (1, 1, 16, 32))
  for (x, w), product in [(tiny, True), (small, True), (large, False)]:
    assert ('conv_general_dilated' not in _primitives(conv, x, w)) == product
  x, w = pointwise
  one_by_one = lambda x, w: conv_lib.conv_general_dilated(x, w, (2, 2), 'VALID',
                                                          dimension_numbers=NHWC)
  assert 'conv_general_dilated' not in _primitives(one_by_one, x, w)
  conv_lib.set_cpu_conv('xla')
  assert 'conv_general_dilated' in _primitives(conv, *tiny)


def test_what_the_product_does_not_cover_goes_to_lax():
  conv_lib.set_cpu_conv('im2col')
  x, w = _data((2, 6, 6, 4), (3, 3, 4, 4))
  cases = [
      lambda x, w: conv_lib.conv_general_dilated(x, w, (1, 1), 'SAME', rhs_dilation=(2, 2),
                                                 dimension_numbers=NHWC),
      lambda x, w: conv_lib.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                 lhs_dilation=(2, 2),
                                                 dimension_numbers=NHWC),
      lambda x, w: conv_lib.conv_general_dilated(x, w[:, :, :2], (1, 1), 'SAME',
                                                 feature_group_count=2, dimension_numbers=NHWC),
      lambda x, w: conv_lib.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)),
                                                 jnp.transpose(w, (3, 2, 0, 1)), (1, 1), 'SAME'),
  ]
  for case in cases:
    assert 'conv_general_dilated' in _primitives(case, x, w)
    case(x, w)   # and runs


def test_other_backends_keep_lax(monkeypatch):
  conv_lib.set_cpu_conv('im2col')
  x, w = _data((2, 2, 2, 8), (3, 3, 8, 8))
  conv = lambda x, w: conv_lib.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
  assert 'conv_general_dilated' not in _primitives(conv, x, w)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert 'conv_general_dilated' in _primitives(conv, x, w)


def test_the_mode_comes_from_the_environment(monkeypatch):
  monkeypatch.setenv('JAXUNLEARN_CPU_CONV', 'xla')
  assert conv_lib.cpu_conv_mode() == 'xla'
  monkeypatch.setenv('JAXUNLEARN_CPU_CONV', 'fast')
  with pytest.raises(ValueError, match='JAXUNLEARN_CPU_CONV'):
    conv_lib.cpu_conv_mode()
  conv_lib.set_cpu_conv('im2col')
  assert conv_lib.cpu_conv_mode() == 'im2col'
  with pytest.raises(ValueError, match='choose one of'):
    conv_lib.set_cpu_conv('fast')


@pytest.mark.slow
def test_resnet_is_the_same_network_either_way():
  """A ResNet-18 traced with 'auto' (products on its small maps) and with 'xla': the same
  parameters, logits, batch statistics and gradients up to float32 rounding."""
  model = ResNet(num_classes=10, width=8)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 16, 16, 3)), jnp.float32)
  labels = jnp.arange(16) % 10
  variables = model.init(jax.random.key(0), x[:1])

  def loss(params):
    logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  x, train=True, mutable=['batch_stats'])
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), labels])
    return ce, (logits, updates['batch_stats'])

  results, counts = {}, {}
  for mode in ('xla', 'auto'):
    conv_lib.set_cpu_conv(mode)
    fn = jax.jit(jax.value_and_grad(lambda p: loss(p), has_aux=True))
    counts[mode] = _convolutions(fn, variables['params'])
    results[mode] = fn(variables['params'])
  # 20 convolutions, each with its input and kernel gradients (the stem's input gradient is
  # not needed); 'auto' writes the small-map ones (stage 3's and 4's) as products.
  assert counts['xla'] == 59 and 0 < counts['auto'] < counts['xla'] - 20
  conv_lib.set_cpu_conv('auto')
  init_auto = model.init(jax.random.key(0), x[:1])
  assert jax.tree.structure(init_auto) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(init_auto), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(results['auto']), jax.tree.leaves(results['xla'])):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-4)


@pytest.mark.slow  # compiles 2 x 2 programs per convolution of the network
def test_conv_benchmark_prints_its_table(tmp_path):
  import json
  import subprocess
  import sys
  from pathlib import Path
  script = Path(__file__).parent.parent / 'experiments' / 'bench_conv.py'
  proc = subprocess.run([sys.executable, str(script), '--width', '4', '--image-size', '8',
                         '--batch', '4', '--repeats', '1', '--json', str(tmp_path / 'conv.json')],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'network total' in proc.stdout
  rows = json.loads((tmp_path / 'conv.json').read_text())['rows']
  assert len(rows) == 11 and all(r['max_difference'] < 1e-4 for r in rows)
  assert {r['auto'] for r in rows} <= {'xla', 'im2col'}
