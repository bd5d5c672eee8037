import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import transform_harness as H
from jaxunlearn.optim import OptimSpec, PairHalf
from jaxunlearn.transforms import (add_elastic_penalty, add_l1_penalty, align_forget_retain, combine_forget_retain,
                                   fast_slow_schedule,
                                   hold, mask_by_saliency, precondition_by_remain_hessian,
                                   project_onto_forget_memory, set_elastic_fisher,
                                   set_saliency_mask, ema_params, track_params_ema)


def _half_mask(params):
  return jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 2).astype(p.dtype), params)


def _forget_extras(params, batch, axis_name):
  return {'forget_grads': H.forget_grads(params, batch, axis_name)}


def _retain_loss_extras(params, batch, axis_name):
  del params, axis_name  # the device-local loss; the transform averages its HVPs
  return {'retain_loss_fn': lambda p: H.mse(p, batch['xr'], batch['yr'])}


def _preconditioned(axis_name=None, **kwargs):
  return optax.chain(precondition_by_remain_hessian(damping=0.1, iters=5, axis_name=axis_name,
                                                    **kwargs), optax.sgd(0.05))


def _align_extras(params, batch, axis_name):
  del params, axis_name  # device-local closures; the transform averages what they give
  return {'forget_grad_fn': jax.grad(lambda p: -H.mse(p, batch['xf'], batch['yf'])),
          'retain_loss_fn': lambda p: H.mse(p, batch['xr'], batch['yr']),
          'forget_loss_fn': lambda p: -H.mse(p, batch['xf'], batch['yf'])}


def _aligned(axis_name=None, **kwargs):
  return optax.chain(align_forget_retain(0.1, axis_name=axis_name, **kwargs), optax.sgd(0.05))


CASES = [
    H.Case('combine_forget_retain',
           lambda: optax.chain(combine_forget_retain(optax.cosine_decay_schedule(0.5, 10)),
                               optax.sgd(0.05, momentum=0.9)),
           extras=_forget_extras,
           hyper=(combine_forget_retain, {'forget_weight': 0.5},
                  lambda: optax.sgd(0.05, momentum=0.9))),
    H.Case('mask_by_saliency',
           lambda: optax.chain(mask_by_saliency(), optax.sgd(0.05)),
           prepare_state=lambda s, p: set_saliency_mask(s, _half_mask(p)), installs=True,
           hyper=(mask_by_saliency, {}, lambda: optax.sgd(0.05))),
    H.Case('mask_by_saliency_freeze_inner',
           lambda: optax.chain(combine_forget_retain(1.0), mask_by_saliency(
               freeze=True, inner=optax.chain(optax.add_decayed_weights(5e-4),
                                              optax.sgd(0.05, momentum=0.9)))),
           extras=_forget_extras,
           prepare_state=lambda s, p: set_saliency_mask(s, _half_mask(p)), installs=True),
    H.Case('precondition_by_remain_hessian_cg', _preconditioned, extras=_retain_loss_extras,
           make_parallel=lambda: _preconditioned('batch'),
           hyper=(precondition_by_remain_hessian, {'damping': 0.1, 'iters': 5},
                  lambda: optax.sgd(0.05))),
    H.Case('precondition_by_remain_hessian_neumann',
           lambda: _preconditioned(method='neumann', neumann_scale=0.1),
           extras=_retain_loss_extras,
           make_parallel=lambda: _preconditioned('batch', method='neumann', neumann_scale=0.1),
           hyper=(precondition_by_remain_hessian, {'damping': 0.1, 'iters': 5,
                                                   'method': 'neumann', 'neumann_scale': 0.1},
                  lambda: optax.sgd(0.05))),
    H.Case('precondition_by_remain_hessian_recompute', lambda: _preconditioned(recompute=True),
           extras=_retain_loss_extras,
           make_parallel=lambda: _preconditioned('batch', recompute=True),
           hyper=(precondition_by_remain_hessian, {'damping': 0.1, 'iters': 5,
                                                   'recompute': True},
                  lambda: optax.sgd(0.05))),
    H.Case('hold', lambda: optax.chain(hold(optax.sgd(0.1, momentum=0.9)), optax.sgd(0.05)),
           hyper=(hold, {'tx': optax.sgd(0.1, momentum=0.9)}, lambda: optax.sgd(0.05))),
    H.Case('fast_slow_forget_chain',
           PairHalf(OptimSpec(lr=0.05, total_steps=10, every=2, forget_weight=3.0,
                              forget_schedule='cosine', forget_clip_norm=1.0,
                              saliency=True), 0),
           prepare_state=lambda s, p: set_saliency_mask(s, _half_mask(p)), installs=True),
    H.Case('fast_slow_forget_chain_adam_shared_clip',
           PairHalf(OptimSpec('adam', lr=0.05, weight_decay=0.0, total_steps=10, every=1,
                              forget_weight=3.0, forget_schedule='cosine',
                              forget_clip_norm=1.0, clip_norm=1.0, saliency=True), 0),
           prepare_state=lambda s, p: set_saliency_mask(s, _half_mask(p))),
    H.Case('fast_slow_retain_chain',
           PairHalf(OptimSpec(lr=0.05, total_steps=10, every=2, forget_weight=25.0,
                              forget_schedule='cosine', forget_clip_norm=7.0,
                              saliency=True), 1),
           prepare_state=lambda s, p: set_saliency_mask(s, _half_mask(p)), installs=True),
    H.Case('align_forget_retain_first', _aligned, extras=_align_extras,
           make_parallel=lambda: _aligned('batch'),
           hyper=(align_forget_retain, {'inner_lr': 0.1, 'forget_weight': 1.0,
                                        'retain_weight': 1.0}, lambda: optax.sgd(0.05))),
    H.Case('align_forget_retain_second', lambda: _aligned(order='second'), extras=_align_extras,
           make_parallel=lambda: _aligned('batch', order='second'),
           hyper=(align_forget_retain, {'inner_lr': 0.1, 'order': 'second',
                                        'forget_weight': 1.0, 'retain_weight': 1.0},
                  lambda: optax.sgd(0.05))),
    H.Case('align_forget_retain_virtual_forget',
           lambda: _aligned(order='second', virtual='forget', forget_weight=0.5),
           extras=_align_extras,
           make_parallel=lambda: _aligned('batch', order='second', virtual='forget',
                                          forget_weight=0.5),
           hyper=(align_forget_retain, {'inner_lr': 0.1, 'order': 'second',
                                        'virtual': 'forget', 'forget_weight': 0.5,
                                        'retain_weight': 1.0}, lambda: optax.sgd(0.05))),
    H.Case('add_elastic_penalty',
           lambda: optax.chain(add_elastic_penalty(0.5), optax.adam(0.05)),
           prepare_state=lambda s, p: set_elastic_fisher(
               s, jax.tree.map(lambda x: jnp.abs(x) + 0.5, p)), installs=True,
           hyper=(add_elastic_penalty, {'strength': 0.5}, lambda: optax.adam(0.05))),
    H.Case('project_onto_forget_memory',
           lambda: optax.chain(combine_forget_retain(0.5),
                               project_onto_forget_memory(3, prefixes=('w',)),
                               optax.sgd(0.05, momentum=0.9)),
           extras=_forget_extras),
    H.Case('project_onto_forget_memory_alone',
           lambda: optax.chain(project_onto_forget_memory(3, prefixes=('w',)), optax.sgd(0.05)),
           extras=_forget_extras,
           hyper=(project_onto_forget_memory, {'every': 3, 'prefixes': ('w',), 'margin': 0.5,
                                               'eps': 1e-3}, lambda: optax.sgd(0.05))),
    H.Case('add_l1_penalty',
           lambda: optax.chain(add_l1_penalty(optax.linear_schedule(0.1, 0.0, 4)),
                               optax.sgd(0.05, momentum=0.9)),
           hyper=(add_l1_penalty, {'strength': 0.1}, lambda: optax.sgd(0.05, momentum=0.9))),
    H.Case('track_params_ema',
           lambda: track_params_ema(optax.sgd(0.05, momentum=0.9), 0.9),
           hyper=(track_params_ema, {'inner': optax.sgd(0.05, momentum=0.9), 'decay': 0.4},
                  optax.identity)),
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_transform_harness(case, tmp_path):
  H.check_all(case, tmp_path)


@pytest.mark.parametrize('idiom', H.IDIOMS)
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_transform_in_every_idiom(case, idiom):
  """Each transform composed as users compose optax ones (tests/transform_harness.py);
  the cells that do not apply say why (and are the table's n/a in docs/transforms.md)."""
  why = H.applies(case, idiom)
  if why is not None:
    assert idiom in ('inject_hyperparams', 'optax_masked', 'optax_partition',
                     'install_jit_vmap'), why
    return
  H.check_idiom(case, idiom)


def test_the_docs_table_is_the_harness():
  """docs/transforms.md shows the transform × idiom table this file runs."""
  from pathlib import Path
  docs = (Path(__file__).parents[1] / 'docs' / 'transforms.md').read_text()
  assert H.idiom_table(CASES) in docs, 'regenerate the table: see docs/transforms.md'


def test_combine_forget_retain_hand_computed():
  tx = combine_forget_retain(forget_weight=lambda t: 2.0 * (t + 1), retain_weight=0.5)
  g_r, g_f = {'a': jnp.array([1.0, -2.0])}, {'a': jnp.array([3.0, 1.0])}
  state = tx.init(g_r)
  u, state = tx.update(g_r, state, forget_grads=g_f)
  np.testing.assert_allclose(u['a'], 0.5 * np.array([1, -2]) + 2.0 * np.array([3, 1]))
  u, state = tx.update(g_r, state, forget_grads=g_f)
  np.testing.assert_allclose(u['a'], 0.5 * np.array([1, -2]) + 4.0 * np.array([3, 1]))
  assert int(state.count) == 2
  with pytest.raises(TypeError, match='forget_grads'):
    tx.update(g_r, state)


def test_mask_multiplies_updates_and_is_ones_by_default():
  tx = mask_by_saliency()
  params = {'a': jnp.ones(4)}
  state = tx.init(params)
  g = {'a': jnp.array([1.0, 2.0, 3.0, 4.0])}
  np.testing.assert_array_equal(tx.update(g, state, params)[0]['a'], g['a'])
  state = set_saliency_mask(state, {'a': np.array([1, 0, 1, 0])})
  np.testing.assert_array_equal(tx.update(g, state, params)[0]['a'], [1.0, 0, 3.0, 0])


def _run(tx, mask, steps=25):
  params = H.init_params()
  state = set_saliency_mask(tx.init(params), mask)

  @jax.jit
  def step(params, state, batch):
    g = H.retain_grads(params, batch)
    u, state = tx.update(g, state, params, forget_grads=H.forget_grads(params, batch))
    return optax.apply_updates(params, u), state

  start = params
  for s in range(steps):
    params, state = step(params, state, H.make_batch(seed=s))
  return start, params


def test_freeze_keeps_masked_weights_bit_identical_under_momentum_and_weight_decay():
  opt = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9))
  mask = _half_mask(H.init_params())
  frozen = optax.chain(combine_forget_retain(1.0), mask_by_saliency(freeze=True, inner=opt))
  start, end = _run(frozen, mask)
  for s, e, m in zip(jax.tree.leaves(start), jax.tree.leaves(end), jax.tree.leaves(mask)):
    np.testing.assert_array_equal(np.asarray(e)[m == 0], np.asarray(s)[m == 0])
    assert np.all(np.asarray(e)[m == 1] != np.asarray(s)[m == 1])  # the rest did learn
  # The SalUn reference's placement (mask the gradient, then SGD with weight decay) moves
  # masked weights: weight decay acts on them every step.
  reference = optax.chain(combine_forget_retain(1.0), mask_by_saliency(), opt)
  start, end = _run(reference, mask)
  moved = [np.any(np.asarray(e)[m == 0] != np.asarray(s)[m == 0])
           for s, e, m in zip(jax.tree.leaves(start), jax.tree.leaves(end), jax.tree.leaves(mask))]
  assert any(moved)


def test_set_saliency_mask_finds_nested_states_and_rejects_bad_masks():
  params = H.init_params()
  tx = optax.named_chain(('clip', optax.clip_by_global_norm(1.0)),
                         ('inner', optax.chain(optax.sgd(0.1), mask_by_saliency(freeze=True))))
  state = tx.init(params)
  mask = _half_mask(params)
  state = set_saliency_mask(state, mask)
  np.testing.assert_array_equal(state['inner'][1].mask['w'], mask['w'])
  with pytest.raises(ValueError, match='selects no weight'):
    set_saliency_mask(state, jax.tree.map(jnp.zeros_like, params))
  with pytest.raises(ValueError, match='does not match the parameters'):
    set_saliency_mask(state, {'w': mask['w']})
  with pytest.raises(ValueError, match='has no mask_by_saliency'):
    set_saliency_mask(optax.sgd(0.1).init(params), mask)
  with pytest.raises(ValueError, match='does not match parameter shape'):
    set_saliency_mask(state, {'w': np.ones(5), 'b': np.ones(3)})


def test_add_l1_penalty_hand_computed():
  tx = add_l1_penalty(optax.linear_schedule(0.5, 0.0, 2))
  params = {'a': jnp.array([2.0, -3.0, 0.0])}
  g = {'a': jnp.array([1.0, 1.0, 1.0])}
  state = tx.init(params)
  u, state = tx.update(g, state, params)
  np.testing.assert_allclose(u['a'], [1.5, 0.5, 1.0])  # + 0.5 * sign
  u, state = tx.update(g, state, params)
  np.testing.assert_allclose(u['a'], [1.25, 0.75, 1.0])  # + 0.25 * sign
  u, state = tx.update(g, state, params)
  np.testing.assert_allclose(u['a'], [1.0, 1.0, 1.0])  # decayed to 0
  with pytest.raises(ValueError, match='needs params'):
    tx.update(g, state)


def _softmax_ce(params, batch):  # not quadratic: its Hessian depends on params
  logits = batch['xr'] @ params['w'] + params['b']
  return optax.softmax_cross_entropy(logits, jax.nn.softmax(batch['yr'])).mean()


@pytest.mark.parametrize('loss_name', ['mse', 'softmax_ce'])
@pytest.mark.parametrize('method, kwargs', [('cg', {'iters': 15}),
                                            ('cg', {'iters': 15, 'unroll': False}),
                                            ('cg', {'iters': 15, 'recompute': True}),
                                            ('neumann', {'iters': 400, 'neumann_scale': 0.2})])
def test_remain_hessian_preconditioner_matches_dense_solve(method, kwargs, loss_name):
  from jax.flatten_util import ravel_pytree
  params, batch = H.init_params(), H.make_batch()
  if loss_name == 'mse':
    loss = lambda p: H.mse(p, batch['xr'], batch['yr'])
  else:
    loss = lambda p: _softmax_ce(p, batch)
  g = H.forget_grads(params, batch)
  flat, unravel = ravel_pytree(params)
  hess = jax.hessian(lambda f: loss(unravel(f)))(flat)
  damping = 0.5
  expected = np.linalg.solve(np.asarray(hess) + damping * np.eye(flat.size), ravel_pytree(g)[0])
  tx = precondition_by_remain_hessian(damping=damping, method=method, **kwargs)
  d, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, retain_loss_fn=loss))(g, tx.init(params),
                                                                          params)
  np.testing.assert_allclose(ravel_pytree(d)[0], expected, rtol=2e-3, atol=2e-4)


def test_remain_hessian_preconditioner_rejects_bad_options():
  with pytest.raises(ValueError, match="'cg' or 'neumann'"):
    precondition_by_remain_hessian(method='lbfgs')
  with pytest.raises(ValueError, match='iters'):
    precondition_by_remain_hessian(iters=0)
  tx = precondition_by_remain_hessian()
  with pytest.raises(ValueError, match='needs params'):
    tx.update({'a': jnp.ones(2)}, tx.init(None), retain_loss_fn=lambda p: 0.0)


def test_fast_slow_schedule_gives_both_updates_of_an_iteration_its_value():
  sched = fast_slow_schedule(lambda t: t, every=3)
  # iterations 0..6 with a forget update at t = 0, 3, 6: F R R R F R R R F R
  counts = np.arange(10)
  np.testing.assert_array_equal([int(sched(c)) for c in counts], [0, 0, 1, 2, 3, 3, 4, 5, 6, 6])
  every_step = fast_slow_schedule(lambda t: t, every=1)  # F R F R ...
  np.testing.assert_array_equal([int(every_step(c)) for c in range(6)], [0, 0, 1, 1, 2, 2])
  assert fast_slow_schedule(0.1, 5)(7) == 0.1
  with pytest.raises(ValueError, match='>= 1'):
    fast_slow_schedule(lambda t: t, 0)


def test_hold_shares_the_state_layout_and_leaves_it_untouched():
  params = H.init_params()
  pre = optax.chain(optax.scale_by_schedule(lambda c: c + 1.0), mask_by_saliency())
  forget_tx = optax.chain(pre, optax.sgd(0.1, momentum=0.9))
  retain_tx = optax.chain(hold(pre), optax.sgd(0.1, momentum=0.9))
  state = set_saliency_mask(forget_tx.init(params), _half_mask(params))
  assert jax.tree.structure(state) == jax.tree.structure(retain_tx.init(params))
  g = jax.tree.map(jnp.ones_like, params)
  u, state2 = retain_tx.update(g, state, params)
  jax.tree.map(np.testing.assert_array_equal, state2[0], state[0])  # held part unchanged
  np.testing.assert_allclose(u['w'], -0.1 * np.ones((4, 3)))  # no mask, no scale applied
  u, state3 = forget_tx.update(g, state2, params)  # scale 1 (count 0), masked, shared momentum
  np.testing.assert_allclose(u['w'], -0.1 * (0.9 + np.asarray(_half_mask(params)['w'])),
                             rtol=1e-6)
  assert int(state3[0][0].count) == 1 and int(state2[0][0].count) == 0


def test_cg_stops_at_negative_curvature_instead_of_diverging():
  """An indefinite 'Hessian' diag(2, -1): plain CG would step along the negative direction;
  truncated CG keeps the last safe iterate, a positive multiple of the first direction."""
  loss = lambda p: p['a'][0] ** 2 - 0.5 * p['a'][1] ** 2
  params, g = {'a': jnp.zeros(2)}, {'a': jnp.array([1.0, 1.0])}
  tx = precondition_by_remain_hessian(damping=0.0, iters=5)
  d, _ = tx.update(g, tx.init(params), params, retain_loss_fn=loss)
  assert np.all(np.isfinite(d['a']))
  assert _tree_dot(d, g) > 0  # still a descent direction for the updates


def _tree_dot(a, b):
  return float(sum(np.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


@pytest.mark.parametrize('virtual', ['retain', 'forget'])
@pytest.mark.parametrize('order', ['first', 'second'])
def test_align_forget_retain_is_the_gradient_of_the_look_ahead_objective(order, virtual):
  """Second order equals ``jax.grad`` of LUR's meta objective; first order equals the same
  formula without the ``eta H`` term. Both losses are non-quadratic (softmax CE)."""
  params, batch = H.init_params(), H.make_batch()
  retain = lambda p: _softmax_ce(p, batch)
  forget = lambda p: -_softmax_ce(p, {'xr': batch['xf'], 'yr': batch['yf']})
  eta, w_u, w_r = 0.3, 0.7, 1.3
  if virtual == 'retain':
    inner, outer, a, b = retain, forget, w_r, w_u
  else:
    inner, outer, a, b = forget, retain, w_u, w_r
  shift = lambda p: jax.tree.map(lambda x, g: x - eta * g, p, jax.grad(inner)(p))
  if order == 'second':
    expected = jax.grad(lambda p: a * inner(p) + b * outer(shift(p)))(params)
  else:
    expected = jax.tree.map(lambda gi, go: a * gi + b * go, jax.grad(inner)(params),
                            jax.grad(outer)(shift(params)))
  tx = align_forget_retain(eta, order=order, virtual=virtual, forget_weight=w_u,
                           retain_weight=w_r)
  got, state = jax.jit(lambda g, s, p: tx.update(
      g, s, p, forget_grad_fn=jax.grad(forget), retain_loss_fn=retain,
      forget_loss_fn=forget))(jax.grad(retain)(params), tx.init(params), params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), got,
               expected)
  assert int(state.count) == 1
  if virtual == 'forget':  # forget_grads at params stand in for forget_grad_fn
    given, _ = tx.update(jax.grad(retain)(params), tx.init(params), params,
                         forget_grads=jax.grad(forget)(params), retain_loss_fn=retain,
                         forget_loss_fn=forget)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), given,
                 got)
  if order == 'second':  # the HVP term is really there
    first = align_forget_retain(eta, 'first', virtual, w_u, w_r).update(
        jax.grad(retain)(params), tx.init(params), params, forget_grad_fn=jax.grad(forget),
        retain_loss_fn=retain)[0]
    assert not np.allclose(first['w'], got['w'], rtol=1e-4)


def test_align_forget_retain_rejects_bad_options_and_missing_closures():
  with pytest.raises(ValueError, match="'first' or 'second'"):
    align_forget_retain(0.1, order='third')
  with pytest.raises(ValueError, match="'retain' or 'forget'"):
    align_forget_retain(0.1, virtual='both')
  params = H.init_params()
  g = jax.tree.map(jnp.ones_like, params)
  tx = align_forget_retain(0.1, order='second')
  with pytest.raises(ValueError, match='retain_loss_fn'):
    tx.update(g, tx.init(params), params, forget_grad_fn=lambda p: g)
  with pytest.raises(ValueError, match='needs params'):
    tx.update(g, tx.init(params), forget_grad_fn=lambda p: g)
  with pytest.raises(ValueError, match='needs forget_grad_fn'):
    tx.update(g, tx.init(params), params, retain_loss_fn=lambda p: 0.0)
  with pytest.raises(ValueError, match='needs forget_grad_fn'):
    align_forget_retain(0.1, virtual='forget').update(g, tx.init(params), params,
                                                      retain_loss_fn=lambda p: 0.0)


def test_add_elastic_penalty_is_the_gradient_of_ewc_and_installs_checked():
  params = H.init_params()
  fisher = jax.tree.map(lambda x: jnp.abs(x) + 0.1, params)
  tx = add_elastic_penalty(0.3)
  state = set_elastic_fisher(tx.init(params), fisher)
  moved = jax.tree.map(lambda p: p + 0.7 * jnp.sin(p), params)
  ewc = lambda q: 0.3 * sum(jnp.sum(f * (a - b) ** 2) for f, a, b in zip(
      jax.tree.leaves(fisher), jax.tree.leaves(q), jax.tree.leaves(params)))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, state, moved)
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(jax.grad(ewc)(moved))):
    np.testing.assert_allclose(u, g, rtol=1e-6)
  # No Fisher installed: no pull; at the anchor: no pull.
  assert all(np.all(u == 0) for u in jax.tree.leaves(tx.update(zeros, tx.init(params), moved)[0]))
  assert all(np.all(u == 0) for u in jax.tree.leaves(tx.update(zeros, state, params)[0]))
  # Nested in a chain; bad Fishers refused.
  chained = optax.chain(optax.clip(1.0), add_elastic_penalty(1.0))
  set_elastic_fisher(chained.init(params), fisher)
  with pytest.raises(ValueError, match='non-negative'):
    set_elastic_fisher(state, jax.tree.map(lambda f: -f, fisher))
  with pytest.raises(ValueError, match='shape'):
    set_elastic_fisher(state, {'w': jnp.ones((3, 4)), 'b': jnp.ones(3)})
  with pytest.raises(ValueError, match='no add_elastic_penalty'):
    set_elastic_fisher(optax.sgd(0.1).init(params), fisher)


def test_project_onto_forget_memory_is_gems_one_memory_dual_solution():
  """Against the dual QP solved by brute force over v >= margin; the memory is refreshed
  every ``every`` updates only; leaves outside ``prefixes`` pass unchanged; an update that
  agrees with the memory passes unchanged."""
  tx = project_onto_forget_memory(2, prefixes=('w',), margin=0.5, eps=1e-3)
  params = {'w': jnp.zeros(3), 'b': jnp.zeros(2)}
  state = tx.init(params)
  m = {'w': jnp.array([1.0, 2.0, 0.0]), 'b': jnp.array([5.0, 5.0])}
  g = {'w': jnp.array([-3.0, 1.0, 4.0]), 'b': jnp.array([1.0, -1.0])}  # <g, m_w> = -1 < 0
  out, state = tx.update(g, state, params, forget_grads=m)
  # dual: min_v 0.5 (|m|^2 + eps) v^2 + <g, m> v, v >= 0.5; brute force over a fine grid
  vs = np.linspace(0.5, 5.0, 450001)
  v = vs[np.argmin(0.5 * (5.0 + 1e-3) * vs ** 2 + (-1.0) * vs)]
  np.testing.assert_allclose(out['w'], g['w'] + v * m['w'], atol=1e-5)
  np.testing.assert_array_equal(out['b'], g['b'])  # not under the prefixes
  # the second update keeps the stored memory, whatever forget_grads says
  out2, state = tx.update(g, state, params, forget_grads={'w': -m['w'], 'b': m['b']})
  np.testing.assert_allclose(out2['w'], out['w'], atol=1e-6)
  # the third refreshes it: with memory -m_w, <g, -m_w> = 1 > 0: no projection
  out3, state = tx.update(g, state, params, forget_grads={'w': -m['w'], 'b': m['b']})
  np.testing.assert_array_equal(out3['w'], g['w'])
  # a strongly opposed update: v = -<g, m> / (|m|^2 + eps) > margin
  g4 = {'w': -10.0 * m['w'], 'b': g['b']}
  state = tx.init(params)
  out4, _ = tx.update(g4, state, params, forget_grads=m)
  np.testing.assert_allclose(out4['w'], g4['w'] + (50.0 / 5.001) * m['w'], rtol=1e-5)
  with pytest.raises(ValueError, match='every >= 1'):
    project_onto_forget_memory(0)


def test_remain_hessian_damping_is_injectable_and_changes_without_recompiling():
  """``optax.inject_hyperparams`` traces the factory's float arguments inside a jitted
  step: the damping check must not be a Python ``if`` on a tracer. Changing the damping
  between steps takes effect without a recompile and equals the transform built with it."""
  params = {'w': jnp.ones(3)}
  loss = lambda q: jnp.sum(q['w'] ** 2 * jnp.arange(1.0, 4.0))
  tx = optax.inject_hyperparams(precondition_by_remain_hessian, static_args=('iters',))(
      damping=0.1, iters=3)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, retain_loss_fn=loss))
  state = tx.init(params)
  for damping in (0.1, 1.0, 0.5):
    state.hyperparams['damping'] = jnp.asarray(damping, jnp.float32)
    got, state = step(params, state, params)
    ref = precondition_by_remain_hessian(damping, 3)
    want = ref.update(params, ref.init(params), params, retain_loss_fn=loss)[0]
    np.testing.assert_allclose(got['w'], want['w'], rtol=1e-5)
  assert step._cache_size() == 1
  with pytest.raises(ValueError, match='damping must be >= 0'):
    precondition_by_remain_hessian(-1.0)


@pytest.mark.parametrize('freeze', [False, True])
def test_a_soft_mask_around_an_inner_optimizer_is_applied_once(freeze):
  """``mask_by_saliency(inner=sgd(1))`` with a mask of 0.5 / 0: the update is -0.5 g where
  the mask is 0.5 (not -0.25 g, the mask applied before and after), 0 where it is 0."""
  params = {'w': jnp.ones(4)}
  g = {'w': jnp.array([1.0, 2.0, 3.0, 4.0])}
  tx = mask_by_saliency(freeze=freeze, inner=optax.sgd(1.0))
  state = set_saliency_mask(tx.init(params), {'w': jnp.array([0.5, 0.5, 0.0, 1.0])})
  u, _ = tx.update(g, state, params)
  np.testing.assert_allclose(u['w'], [-0.5, -1.0, 0.0, -4.0])


def test_frozen_weights_stay_bit_identical_even_at_negative_zero():
  """A frozen weight of -0.0 stays -0.0 after ``optax.apply_updates`` (an update of +0.0
  would turn it into +0.0)."""
  params = {'w': jnp.array([-0.0, 0.0, -1.5, 2.0])}
  tx = mask_by_saliency(freeze=True, inner=optax.sgd(0.1, momentum=0.9))
  state = set_saliency_mask(tx.init(params), {'w': jnp.array([0.0, 0.0, 0.0, 1.0])})
  for _ in range(3):
    u, state = tx.update({'w': jnp.ones(4)}, state, params)
    params = optax.apply_updates(params, u)
  w = np.asarray(params['w'])
  assert np.signbit(w[0]) and not np.signbit(w[1]) and w[2] == -1.5 and w[3] != 2.0


def test_installers_work_inside_jit_and_vmap_and_refuse_a_transposed_mask():
  """``set_saliency_mask`` / ``set_elastic_fisher`` inside ``jit`` (and ``vmap`` over
  models) install what they are given; shapes are checked exactly at trace time."""
  params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}
  mask = {'w': jnp.array([[1.0, 0, 1], [0, 1, 0]]), 'b': jnp.ones(3)}
  tx = mask_by_saliency(freeze=True, inner=optax.sgd(0.1))
  state = jax.jit(lambda s, m: set_saliency_mask(s, m))(tx.init(params), mask)
  np.testing.assert_array_equal(state.mask['w'], mask['w'])
  batched = jax.vmap(lambda m: set_saliency_mask(tx.init(params), m).mask)(
      jax.tree.map(lambda m: jnp.stack([m, 1 - m]), mask))
  np.testing.assert_array_equal(batched['w'][1], 1 - mask['w'])
  with pytest.raises(ValueError, match=r'shape \(3, 2\) does not match parameter shape'):
    set_saliency_mask(tx.init(params), {'w': mask['w'].T, 'b': mask['b']})
  el = add_elastic_penalty(1.0)
  fisher = {'w': jnp.full((2, 3), 2.0), 'b': jnp.ones(3)}
  installed = jax.jit(lambda s, f: set_elastic_fisher(s, f))(el.init(params), fisher)
  np.testing.assert_array_equal(installed.fisher['w'], fisher['w'])


def test_apply_if_finite_also_guards_the_extras_and_closures():
  """optax's guard checks only ``updates``: a NaN forget gradient passes it into the
  params. Ours rejects that step (params unchanged, counted), and one whose closure
  (``forget_grad_fn``) returns NaN; finite steps are the inner transform's exactly."""
  from jaxunlearn.transforms import apply_if_finite
  params = {'w': jnp.ones(3)}
  g_r, g_f = {'w': jnp.full(3, 0.5)}, {'w': jnp.array([1.0, jnp.nan, 2.0])}
  inner = lambda: optax.chain(combine_forget_retain(1.0), optax.sgd(0.1))
  theirs = optax.apply_if_finite(inner(), 3)
  u, _ = theirs.update(g_r, theirs.init(params), params, forget_grads=g_f)
  assert np.isnan(np.asarray(u['w'])).any()  # the defect this guard exists for
  ours = apply_if_finite(inner(), 3)
  step = jax.jit(lambda g, s, p, f: ours.update(g, s, p, forget_grads=f))
  u, state = step(g_r, ours.init(params), params, g_f)
  np.testing.assert_array_equal(u['w'], np.zeros(3))
  assert int(state.total_notfinite) == 1 and not bool(state.last_finite)
  good = {'w': jnp.array([1.0, 0.0, 2.0])}
  u, state = step(g_r, state, params, good)
  want, _ = inner().update(g_r, inner().init(params), params, forget_grads=good)
  np.testing.assert_allclose(u['w'], want['w'])
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 1
  aligned = apply_if_finite(align_forget_retain(0.1), 3)
  u, state = aligned.update(g_r, aligned.init(params), params,
                            forget_grad_fn=lambda p: jax.tree.map(lambda x: x * jnp.nan, p))
  np.testing.assert_array_equal(u['w'], np.zeros(3))
  assert int(state.total_notfinite) == 1


def test_flax_train_state_passes_the_extras():
  """``TrainState.apply_gradients(grads=g_r, extra_args={'forget_grads': g_f})`` inside
  ``jit`` takes the step ``tx.update`` with those extras takes; flax's own cannot."""
  import flax.linen as nn
  from flax.training import train_state as flax_ts
  from jaxunlearn.transforms import TrainState
  model = nn.Dense(2)
  params = model.init(jax.random.key(0), jnp.ones((1, 3)))['params']
  tx = optax.chain(combine_forget_retain(0.5), optax.sgd(0.1, momentum=0.9))
  g_r = jax.tree.map(jnp.ones_like, params)
  g_f = jax.tree.map(lambda p: -2 * jnp.ones_like(p), params)
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  step = jax.jit(lambda s, a, b: s.apply_gradients(grads=a, extra_args={'forget_grads': b}))
  new = step(step(state, g_r, g_f), g_r, g_f)
  opt = tx.init(params)
  want = params
  for _ in range(2):
    u, opt = tx.update(g_r, opt, want, forget_grads=g_f)
    want = optax.apply_updates(want, u)
  jax.tree.map(np.testing.assert_allclose, new.params, want)
  assert int(new.step) == 2
  with pytest.raises(TypeError):  # flax's needs what it cannot pass
    flax_ts.TrainState.create(apply_fn=model.apply, params=params, tx=tx).apply_gradients(
        grads=g_r)


def test_multi_steps_averages_the_forget_gradient_too():
  """Two mini-steps with forget gradients f1, f2: ``multi_steps`` steps once on the means
  of both the retain and the forget gradients; ``optax.MultiSteps`` uses f2 alone."""
  from jaxunlearn.transforms import multi_steps
  params = {'w': jnp.ones(3)}
  tx = lambda: optax.chain(combine_forget_retain(1.0), optax.sgd(1.0))
  r1, r2 = {'w': jnp.array([1.0, 2, 3])}, {'w': jnp.array([3.0, 2, 1])}
  f1, f2 = {'w': jnp.array([4.0, 0, 0])}, {'w': jnp.array([0.0, 0, 8])}
  ours = multi_steps(tx(), 2)
  step = jax.jit(lambda g, s, p, f: ours.update(g, s, p, forget_grads=f))
  u1, s = step(r1, ours.init(params), params, f1)
  u2, s = step(r2, s, params, f2)
  np.testing.assert_array_equal(u1['w'], np.zeros(3))
  np.testing.assert_allclose(u2['w'], -np.array([2.0 + 2, 2 + 0, 2 + 4]))
  assert int(s.gradient_step) == 1 and int(s.mini_step) == 0
  u3, s = step(r1, s, params, f1)  # the window starts afresh
  np.testing.assert_array_equal(u3['w'], np.zeros(3))
  theirs = optax.MultiSteps(tx(), 2)
  t = theirs.init(params)
  _, t = theirs.update(r1, t, params, forget_grads=f1)
  v, _ = theirs.update(r2, t, params, forget_grads=f2)
  np.testing.assert_allclose(v['w'], -np.array([2.0 + 0, 2 + 0, 2 + 8]))  # f2 only
  with pytest.raises(ValueError, match="accumulates \\['forget_grads'\\]"):
    ours.update(r1, ours.init(params), params)


def test_under_optax_masked_and_partition_extras_and_closures_work():
  """``optax.masked`` (default settings) around ``combine_forget_retain`` with a full
  ``forget_grads``; our ``masked`` / ``partition`` around ``align_forget_retain`` whose
  closures need the full params (a model cannot run on masked ones): the masked part's
  update is the look-ahead gradient with the other part held fixed."""
  from jaxunlearn.transforms import masked, partition
  params = {'a': jnp.array([1.0, -2.0]), 'b': jnp.array([0.5, 1.5, -1.0])}
  g = {'a': jnp.array([0.1, 0.2]), 'b': jnp.array([0.3, 0.4, 0.5])}
  f = {'a': jnp.array([1.0, 1.0]), 'b': jnp.array([2.0, 2.0, 2.0])}
  tx = optax.masked(combine_forget_retain(0.5), {'a': True, 'b': False})
  u, _ = tx.update(g, tx.init(params), params, forget_grads=f)
  np.testing.assert_allclose(u['a'], g['a'] + 0.5 * f['a'])
  np.testing.assert_allclose(u['b'], g['b'])  # outside the mask: passed through

  def loss(q):  # needs every leaf, as a model would
    return jnp.sum(jnp.sin(q['a'])) * jnp.sum(q['b'] ** 2) + jnp.sum(q['a'] ** 2)
  forget_grad_fn = jax.grad(lambda q: -loss(q))
  eta = 0.1
  g_r = jax.grad(loss)(params)
  # First order: g_R + grad L_U at the look-ahead point, only 'a' shifted.
  want_a = g_r['a'] + jax.grad(lambda a: -loss({'a': a, 'b': params['b']}))(
      params['a'] - eta * g_r['a'])
  with pytest.raises(Exception):  # optax's own: the closure gets MaskedNode leaves
    t = optax.masked(align_forget_retain(eta), {'a': True, 'b': False})
    t.update(g_r, t.init(params), params, forget_grad_fn=forget_grad_fn)
  ours = masked(align_forget_retain(eta), {'a': True, 'b': False})
  u, _ = jax.jit(lambda g, s, p: ours.update(g, s, p, forget_grad_fn=forget_grad_fn))(
      g_r, ours.init(params), params)
  np.testing.assert_allclose(u['a'], want_a, rtol=1e-5)
  np.testing.assert_allclose(u['b'], g_r['b'])
  parts = partition({'lur': align_forget_retain(eta), 'sgd': optax.sgd(1.0)},
                    {'a': 'lur', 'b': 'sgd'})
  u, _ = parts.update(g_r, parts.init(params), params, forget_grad_fn=forget_grad_fn)
  np.testing.assert_allclose(u['a'], want_a, rtol=1e-5)
  np.testing.assert_allclose(u['b'], -g_r['b'])


def test_installers_under_optax_masked_take_full_or_module_level_masks():
  """Inside ``optax.masked`` the states hold ``MaskedNode`` leaves: a full mask / Fisher
  is cut to the masked part, and a mask may say ``MaskedNode()`` for a whole module."""
  params = {'body': {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}, 'head': {'w': jnp.ones(3)}}
  which = {'body': {'w': True, 'b': True}, 'head': {'w': False}}
  tx = optax.masked(mask_by_saliency(freeze=True, inner=optax.sgd(1.0)), which)
  full = {'body': {'w': jnp.array([[1.0, 0], [0, 1]]), 'b': jnp.ones(2)},
          'head': {'w': jnp.zeros(3)}}
  for mask in (full, {'body': full['body'], 'head': optax.MaskedNode()}):
    state = set_saliency_mask(tx.init(params), mask)
    g = jax.tree.map(jnp.ones_like, params)
    u, _ = tx.update(g, state, params)
    np.testing.assert_array_equal(u['body']['w'], -np.eye(2))
    np.testing.assert_array_equal(u['head']['w'], np.ones(3))  # outside: passed through
  el = optax.masked(add_elastic_penalty(1.0), which)
  installed = set_elastic_fisher(el.init(params), jax.tree.map(jnp.ones_like, params))
  assert isinstance(installed.inner_state.fisher['head'], optax.MaskedNode) or \
      isinstance(installed.inner_state.fisher['head']['w'], optax.MaskedNode)


def test_track_params_ema_is_the_bias_corrected_average_of_the_params_it_makes():
  """The average of theta_1..theta_t weighted d_t...d_{k+1} (1 - d_k), normalised, with the
  decay injected and changed between steps; the updates are the inner optimizer's; under
  ``optax.masked`` it averages the part it updates."""
  inner = optax.adam(0.1)
  tx = optax.inject_hyperparams(track_params_ema, static_args=('inner',))(inner=inner,
                                                                         decay=0.9)
  params = H.init_params()
  state, plain = tx.init(params), inner.init(params)
  step = jax.jit(tx.update)
  seen, decays = [], [0.9, 0.5, 0.99, 0.0, 0.7]
  for i, d in enumerate(decays):
    g = H.retain_grads(params, H.make_batch(seed=i))
    state.hyperparams['decay'] = jnp.asarray(d, jnp.float32)
    updates, state = step(g, state, params)
    want, plain = inner.update(g, plain, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, want)
    params = optax.apply_updates(params, updates)
    seen.append(params)
  # weight of theta_k: (1 - d_k) times the decays of the later steps
  weights = [(1 - decays[k]) * np.prod(decays[k + 1:]) for k in range(len(decays))]
  want = jax.tree.map(lambda *ps: sum(w * p for w, p in zip(weights, ps)) / sum(weights),
                      *seen)
  got = ema_params(state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
  assert not np.allclose(got['w'], params['w'])  # not simply the last params

  masked = optax.masked(track_params_ema(optax.sgd(0.5), 0.5), {'w': True, 'b': False})
  params = H.init_params()
  state = masked.init(params)
  trail = []
  for i in range(3):
    updates, state = masked.update(H.retain_grads(params, H.make_batch(seed=i)), state, params)
    params = optax.apply_updates(params, updates)
    trail.append(params['w'])
  want = (0.25 * trail[0] + 0.5 * trail[1] + 1.0 * trail[2]) / 1.75
  np.testing.assert_allclose(ema_params(state)['w'], want, rtol=1e-6)
  assert isinstance(ema_params(state)['b'], optax.MaskedNode)  # the part it does not update


def test_ema_params_refuses_a_state_without_an_average_or_before_a_step():
  with pytest.raises(ValueError, match='no track_params_ema'):
    ema_params(optax.sgd(0.1).init(H.init_params()))
  with pytest.raises(ValueError, match='no update'):
    ema_params(track_params_ema(optax.sgd(0.1), 0.9).init(H.init_params()))
  with pytest.raises(ValueError, match=r'\[0, 1\)'):
    track_params_ema(optax.sgd(0.1), 1.0)
  with pytest.raises(ValueError, match='ema_decay'):
    OptimSpec(ema_decay=0.5, every=2, forget_weight=1.0)
