"""The shared test harness every unlearning transform passes (docs/architecture.md).

A :class:`Case` names a transform factory and how to build its extra arguments from a small
regression problem; :func:`check_all` runs every property on it:

- no recompilation on the second jitted call;
- an unexpected extra keyword argument is accepted;
- it runs inside ``jax.lax.scan`` and gives the same trajectory as a Python loop;
- its state survives an orbax checkpoint round trip (and the restored state continues
  identically);
- bfloat16 params keep their dtype in updates and state;
- under ``jax.pmap`` over several devices (each a shard of the global batch, gradients
  averaged with ``pmean``) it gives the same updates as on one device with the whole batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass
class Case:
  name: str
  make: Callable[[], optax.GradientTransformationExtraArgs]
  # (params, batch, axis_name) -> dict of extras; batch = dict of arrays.
  extras: Callable = lambda params, batch, axis_name: {}
  prepare_state: Callable = lambda state, params: state  # e.g. install a mask
  # The transform as built for pmap over axis 'batch', when it differs (axis_name option).
  make_parallel: Callable | None = None


def init_params(dtype=jnp.float32):
  k1, k2 = jax.random.split(jax.random.key(0))
  return {'w': jax.random.normal(k1, (4, 3)).astype(dtype),
          'b': jax.random.normal(k2, (3,)).astype(dtype)}


def make_batch(n=16, seed=1):
  k = jax.random.split(jax.random.key(seed), 4)
  return {'xr': jax.random.normal(k[0], (n, 4)), 'yr': jax.random.normal(k[1], (n, 3)),
          'xf': jax.random.normal(k[2], (n, 4)), 'yf': jax.random.normal(k[3], (n, 3))}


def mse(params, x, y):
  pred = x.astype(params['w'].dtype) @ params['w'] + params['b']
  return jnp.mean((pred.astype(jnp.float32) - y) ** 2)


def retain_grads(params, batch, axis_name=None):
  g = jax.grad(mse)(params, batch['xr'], batch['yr'])
  return g if axis_name is None else jax.lax.pmean(g, axis_name)


def forget_grads(params, batch, axis_name=None):
  """Gradient of the forget objective, signed so minimising it forgets (ascent: -MSE)."""
  g = jax.grad(lambda p: -mse(p, batch['xf'], batch['yf']))(params)
  return g if axis_name is None else jax.lax.pmean(g, axis_name)


def _step(case: Case, tx, axis_name=None):
  def step(params, state, batch):
    g = retain_grads(params, batch, axis_name)
    updates, state = tx.update(g, state, params, **case.extras(params, batch, axis_name))
    return optax.apply_updates(params, updates), state, updates
  return step


def _init(case, tx, params):
  return case.prepare_state(tx.init(params), params)


def check_no_recompile(case: Case):
  tx = case.make()
  params = init_params()
  step = jax.jit(_step(case, tx))
  state = _init(case, tx, params)
  params, state, _ = step(params, state, make_batch(seed=1))
  params, state, _ = step(params, state, make_batch(seed=2))
  assert step._cache_size() == 1, f'{case.name}: recompiled on the second call'


def check_unexpected_extra(case: Case):
  tx = case.make()
  params = init_params()
  state = _init(case, tx, params)
  batch = make_batch()
  extras = case.extras(params, batch, None)
  tx.update(retain_grads(params, batch), state, params, surprise=jnp.ones(3), **extras)


def check_scan_equals_loop(case: Case, steps=4):
  tx = case.make()
  params = init_params()
  state = _init(case, tx, params)
  batches = [make_batch(seed=s) for s in range(steps)]
  step = _step(case, tx)
  p_loop, s_loop = params, state
  for b in batches:
    p_loop, s_loop, _ = step(p_loop, s_loop, b)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)

  def body(carry, b):
    p, s = carry
    p, s, _ = step(p, s, b)
    return (p, s), None

  (p_scan, s_scan), _ = jax.jit(lambda c, xs: jax.lax.scan(body, c, xs))((params, state), stacked)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_loop, p_scan)


def check_checkpoint_roundtrip(case: Case, tmp_path):
  from jaxunlearn.checkpoint import load_variables, save_variables
  tx = case.make()
  params = init_params()
  state = _init(case, tx, params)
  step = jax.jit(_step(case, tx))
  params, state, _ = step(params, state, make_batch(seed=1))
  save_variables(tmp_path / case.name, {'state': state})
  restored = load_variables(tmp_path / case.name, like={'state': state})['state']
  restored = jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(restored))
  jax.tree.map(np.testing.assert_array_equal, state, restored)
  a = step(params, state, make_batch(seed=2))[0]
  b = step(params, restored, make_batch(seed=2))[0]
  jax.tree.map(np.testing.assert_array_equal, a, b)


def check_bf16_dtype(case: Case):
  tx = case.make()
  params = init_params(jnp.bfloat16)
  state = _init(case, tx, params)
  new_params, new_state, updates = jax.jit(_step(case, tx))(params, state, make_batch())
  for tree in (new_params, updates):
    for leaf in jax.tree.leaves(tree):
      assert leaf.dtype == jnp.bfloat16, f'{case.name}: {leaf.dtype} instead of bfloat16'
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
    assert a.dtype == b.dtype, f'{case.name}: state dtype changed {a.dtype} -> {b.dtype}'


def check_pmap_equals_single_device(case: Case, devices=4, steps=2):
  assert jax.local_device_count() >= devices, 'set --xla_force_host_platform_device_count'
  tx = case.make()
  params = init_params()
  state = _init(case, tx, params)
  batches = [make_batch(n=16, seed=s) for s in range(steps)]
  single = jax.jit(_step(case, tx))
  p1, s1 = params, state
  for b in batches:
    p1, s1, _ = single(p1, s1, b)
  tx_parallel = (case.make_parallel or case.make)()
  replicate = lambda t: jax.tree.map(lambda x: jnp.stack([x] * devices), t)
  shard = lambda b: jax.tree.map(lambda x: x.reshape(devices, -1, *x.shape[1:]), b)
  parallel = jax.pmap(_step(case, tx_parallel, axis_name='batch'), axis_name='batch')
  pn, sn = replicate(params), replicate(state)
  for b in batches:  # awaited: see jaxunlearn/parallel.py on XLA:CPU collectives
    pn, sn, _ = jax.block_until_ready(parallel(pn, sn, shard(b)))
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(pn)):
    for d in range(devices):
      np.testing.assert_allclose(a, b[d], rtol=1e-5, atol=1e-6)


def check_all(case: Case, tmp_path):
  check_no_recompile(case)
  check_unexpected_extra(case)
  check_scan_equals_loop(case)
  check_checkpoint_roundtrip(case, tmp_path)
  check_bf16_dtype(case)
  check_pmap_equals_single_device(case)
