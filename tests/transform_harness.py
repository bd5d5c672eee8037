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

and every idiom a user composes it with (:data:`IDIOMS`, :func:`check_idiom`):

- ``inject_hyperparams``: every float hyperparameter injected, changed between steps
  without a recompile, each step equal to the transform built with that value;
- ``optax.masked`` / ``optax.partition`` (and ours, which run closures on the full
  params) over part of the params: the selected part's update is the transform's on the
  sub-problem with the rest held fixed, the rest passed through / the other optimizer's;
- our ``apply_if_finite`` with a NaN in each extra (an array, or a closure's output): the
  NaN never reaches the params, and an array's NaN is a rejected, counted step;
- our ``multi_steps`` with extras: two mini-steps are one step on the mean retain
  gradient and mean array extras (closures from the last mini-step);
- flax ``TrainState`` (ours, with ``extra_args``) and ``nnx.Optimizer``: the same
  trajectory as the plain ``tx.update`` loop;
- installing a mask / Fisher inside ``jit`` and ``vmap``: what the eager install gives.
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
  # (factory, kwargs, tail): make() is optax.chain(factory(**kwargs), tail()); the
  # inject_hyperparams idiom injects each float kwarg. None: not one factory (say why).
  hyper: tuple | None = None
  installs: bool = False  # prepare_state installs a mask / Fisher (the jit/vmap idiom)


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


# ---------------------------------------------------------------------------------------
# Idioms: how users compose a transform (issue-driven; docs/transforms.md has the table).

IDIOMS = ('inject_hyperparams', 'optax_masked', 'masked', 'optax_partition', 'partition',
          'apply_if_finite', 'multi_steps', 'train_state', 'nnx_optimizer', 'install_jit_vmap')


def _close(a, b, what, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                               rtol=rtol, atol=atol, err_msg=what)


def _loop(case, tx, params, batches):
  """Params after the plain ``tx.update`` loop over ``batches`` (the reference)."""
  step = jax.jit(_step(case, tx))
  state = _init(case, tx, params)
  for b in batches:
    params, state, _ = step(params, state, b)
  return params


def _has_closures(case, params, batch) -> bool:
  return any(callable(v) for v in case.extras(params, batch, None).values())


def applies(case: Case, idiom: str) -> str | None:
  """None when ``idiom`` applies to ``case``, else why not (the table's n/a cells)."""
  params, batch = init_params(), make_batch()
  if idiom == 'inject_hyperparams' and case.hyper is None:
    return 'a chain of several transforms, not one factory (its parts have their own rows)'
  if idiom in ('optax_masked', 'optax_partition') and _has_closures(case, params, batch):
    return "optax's calls closures on MaskedNode params: use ours"
  if idiom == 'install_jit_vmap' and not case.installs:
    return 'nothing to install'
  return None


def check_idiom(case: Case, idiom: str):
  why = applies(case, idiom)
  assert why is None, why
  globals()['_check_' + idiom](case)


def _check_inject_hyperparams(case):
  factory, kwargs, tail = case.hyper
  floats = [k for k, v in kwargs.items() if isinstance(v, float)]
  static = tuple(k for k in kwargs if k not in floats)
  tx = optax.chain(optax.inject_hyperparams(factory, static_args=static)(**kwargs), tail())
  params = init_params()
  state = _init(case, tx, params)
  assert set(floats) <= set(state[0].hyperparams), (floats, state[0].hyperparams)

  def step(params, state, batch):
    g = retain_grads(params, batch)
    return tx.update(g, state, params, **case.extras(params, batch, None))
  step = jax.jit(step)
  for i, factor in enumerate((1.0, 0.5, 2.0, 1.5)):
    values = {k: kwargs[k] * factor ** (1 + j) for j, k in enumerate(floats)}
    for k, v in values.items():
      state[0].hyperparams[k] = jnp.asarray(v, state[0].hyperparams[k].dtype)
    batch = make_batch(seed=i)
    ref = optax.chain(factory(**{**kwargs, **values}), tail())
    want, _ = ref.update(retain_grads(params, batch), (state[0].inner_state, state[1]), params,
                         **case.extras(params, batch, None))
    updates, state = step(params, state, batch)
    _close(updates, want, f'{case.name}: injected {values} differs from built with them')
    params = optax.apply_updates(params, updates)
  assert step._cache_size() == 1, f'{case.name}: changing a hyperparameter recompiled'


SELECT = {'w': True, 'b': False}  # the part the wrapped transform updates


def _sub_extras(case, params, batch):
  """The extras of the sub-problem over ``params['w']`` with ``b`` held fixed."""
  full = case.extras(params, batch, None)
  structure = jax.tree.structure(params)

  def cut(fn):
    def sub(q, *a, **k):
      out = fn({'w': q['w'], 'b': params['b']}, *a, **k)
      return {'w': out['w']} if jax.tree.structure(out) == structure else out
    return sub
  return {k: cut(v) if callable(v) else {'w': v['w']} for k, v in full.items()}


def _check_wrapped(case, wrap, other):
  """Two steps of ``wrap(case.make())``: 'w' follows the sub-problem, 'b' ``other``."""
  tx = wrap(case.make())
  params = init_params()
  state = case.prepare_state(tx.init(params), params)
  sub_tx = case.make()
  sub = {'w': params['w']}
  sub_state = case.prepare_state(sub_tx.init(sub), sub)
  other_state = other.init({'b': params['b']})
  step = jax.jit(_step(case, tx))
  for i in range(2):
    batch = make_batch(seed=i)
    g = retain_grads(params, batch)
    want_w, sub_state = sub_tx.update({'w': g['w']}, sub_state, sub,
                                      **_sub_extras(case, params, batch))
    want_b, other_state = other.update({'b': g['b']}, other_state, {'b': params['b']})
    params, state, updates = step(params, state, batch)
    _close(updates['w'], want_w['w'], f'{case.name}: the selected part')
    _close(updates['b'], want_b['b'], f'{case.name}: the part outside')
    sub = {'w': params['w']}


def _check_optax_masked(case):
  _check_wrapped(case, lambda tx: optax.masked(tx, SELECT), optax.identity())


def _check_masked(case):
  from jaxunlearn.transforms import masked
  _check_wrapped(case, lambda tx: masked(tx, SELECT), optax.identity())


def _labels():
  return {'w': 'ours', 'b': 'other'}


def _check_optax_partition(case):
  _check_wrapped(case, lambda tx: optax.partition({'ours': tx, 'other': optax.sgd(0.1)},
                                                  _labels()), optax.sgd(0.1))


def _check_partition(case):
  from jaxunlearn.transforms import partition
  _check_wrapped(case, lambda tx: partition({'ours': tx, 'other': optax.sgd(0.1)},
                                            _labels()), optax.sgd(0.1))


def _poisoned(value):
  if callable(value):
    return lambda *a, **k: jax.tree.map(lambda x: x * jnp.nan, value(*a, **k))
  leaves, tree = jax.tree.flatten(value)
  return jax.tree.unflatten(tree, [leaves[0].at[0].set(jnp.nan)] + leaves[1:])


def _check_apply_if_finite(case):
  from jaxunlearn.transforms import apply_if_finite
  params, batch = init_params(), make_batch()
  extras = case.extras(params, batch, None)
  inner = case.make()
  guarded = apply_if_finite(case.make(), 3)
  g = retain_grads(params, batch)
  for name in ['updates', *extras]:
    bad_g = _poisoned(g) if name == 'updates' else g
    bad = {k: _poisoned(v) if k == name else v for k, v in extras.items()}
    state = _init(case, guarded, params)
    updates, state = jax.jit(lambda g, s, p: guarded.update(g, s, p, **bad))(bad_g, state,
                                                                              params)
    new = optax.apply_updates(params, updates)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new)), \
        f'{case.name}: a NaN in {name} reached the params'
    direct, _ = inner.update(bad_g, _init(case, inner, params), params, **bad)
    must_reject = name == 'updates' or not callable(extras[name]) or not all(
        np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(direct))
    if must_reject:
      assert int(state.total_notfinite) == 1, f'{case.name}: NaN in {name} not counted'
      _close(updates, jax.tree.map(jnp.zeros_like, updates), f'{case.name}: {name}', 0, 0)
    else:  # a closure the transform does not call: nothing to reject
      assert int(state.total_notfinite) == 0
      _close(updates, direct, f'{case.name}: an unused closure {name} changed the step')
  # and a finite step is the inner's exactly
  updates, _ = guarded.update(g, _init(case, guarded, params), params, **extras)
  want, _ = inner.update(g, _init(case, inner, params), params, **extras)
  _close(updates, want, f'{case.name}: a finite step differs from the inner one', 0, 0)


def _check_multi_steps(case):
  from jaxunlearn.transforms import multi_steps
  params = init_params()
  b1, b2 = make_batch(seed=1), make_batch(seed=2)
  arrays = tuple(k for k, v in case.extras(params, b1, None).items() if not callable(v))
  acc = multi_steps(case.make(), 2, accumulate=arrays)
  state = _init(case, acc, params)
  step = jax.jit(lambda g, s, b: acc.update(g, s, params, **case.extras(params, b, None)))
  u1, state = step(retain_grads(params, b1), state, b1)
  _close(u1, jax.tree.map(jnp.zeros_like, u1), f'{case.name}: first mini-step', 0, 0)
  u2, state = step(retain_grads(params, b2), state, b2)
  mean = lambda a, b: jax.tree.map(lambda x, y: (x + y) / 2, a, b)
  e1, e2 = case.extras(params, b1, None), case.extras(params, b2, None)
  extras = {k: mean(e1[k], e2[k]) if k in arrays else e2[k] for k in e2}
  tx = case.make()
  want, _ = tx.update(mean(retain_grads(params, b1), retain_grads(params, b2)),
                      _init(case, tx, params), params, **extras)
  _close(u2, want, f'{case.name}: the accumulated step')


def _check_train_state(case):
  from jaxunlearn.transforms import TrainState
  params = init_params()
  batches = [make_batch(seed=s) for s in range(3)]
  tx = case.make()
  state = TrainState.create(apply_fn=None, params=params, tx=tx)
  state = state.replace(opt_state=case.prepare_state(state.opt_state, params))

  @jax.jit
  def step(state, batch):
    return state.apply_gradients(grads=retain_grads(state.params, batch),
                                 extra_args=case.extras(state.params, batch, None))
  for b in batches:
    state = step(state, b)
  _close(state.params, _loop(case, case.make(), params, batches), f'{case.name}: TrainState')
  assert int(state.step) == len(batches)


def _check_nnx_optimizer(case):
  from flax import nnx
  params = init_params()
  batches = [make_batch(seed=s) for s in range(3)]

  class Linear(nnx.Module):
    def __init__(self):
      self.w, self.b = nnx.Param(params['w']), nnx.Param(params['b'])

  model = Linear()
  optimizer = nnx.Optimizer(model, case.make(), wrt=nnx.Param)
  optimizer.opt_state = case.prepare_state(optimizer.opt_state, nnx.state(model, nnx.Param))

  @nnx.jit
  def step(model, optimizer, batch):
    p = nnx.as_pure(nnx.state(model, nnx.Param))
    grads = nnx.grad(lambda m: mse({'w': m.w[...], 'b': m.b[...]}, batch['xr'],
                                   batch['yr']))(model)  # a State of Params, as users get
    optimizer.update(model, grads, **case.extras(p, batch, None))
  for b in batches:
    step(model, optimizer, b)
  got = {'w': model.w.get_value(), 'b': model.b.get_value()}
  _close(got, _loop(case, case.make(), params, batches), f'{case.name}: nnx.Optimizer')


def _check_install_jit_vmap(case):
  tx = case.make()
  p1, p2 = init_params(), jax.tree.map(lambda x: x * -2.0 + 0.25, init_params())
  eager = [case.prepare_state(tx.init(p), p) for p in (p1, p2)]
  jitted = jax.jit(lambda p: case.prepare_state(tx.init(p), p))(p1)
  jax.tree.map(np.testing.assert_array_equal, jitted, eager[0])
  both = jax.vmap(lambda p: case.prepare_state(tx.init(p), p))(
      jax.tree.map(lambda a, b: jnp.stack([a, b]), p1, p2))
  for i in range(2):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x[i], y), both, eager[i])


def idiom_table(cases) -> str:
  """The transform × idiom table of docs/transforms.md: ``passes`` where a test runs the
  idiom (``test_transform_in_every_idiom``), ``n/a`` where it does not apply, with why."""
  head = ['case'] + list(IDIOMS)
  rows = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  notes = {}
  for case in cases:
    cells = []
    for idiom in IDIOMS:
      why = applies(case, idiom)
      if why is None:
        cells.append('passes')
      else:
        n = notes.setdefault(why, len(notes) + 1)
        cells.append(f'n/a ({n})')
    rows.append(f'| `{case.name}` | ' + ' | '.join(cells) + ' |')
  rows.append('')
  rows += [f'({n}) {why}.' for why, n in notes.items()]
  return '\n'.join(rows)
