import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import losses
from jaxunlearn.models import make_model
from jaxunlearn.objectives import Classifier
from jaxunlearn.optim import OptimSpec, fast_slow_pair, make_tx
from jaxunlearn.step import init_state, predict, train_step
from jaxunlearn.train import Phase, TrainConfig, epoch_batches, fit, train_classifier


def test_epoch_batches_cover_each_example_once():
  seen = []
  for idx, w in epoch_batches(10, 4, seed=0, epoch=0):
    assert idx.shape == (4,) and w.shape == (4,)
    seen.extend(idx[w > 0])
  assert sorted(seen) == list(range(10))
  a = [i for i, _ in epoch_batches(10, 4, 0, 1)]
  b = [i for i, _ in epoch_batches(10, 4, 0, 1)]
  c = [i for i, _ in epoch_batches(10, 4, 0, 2)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  with pytest.raises(ValueError, match='empty'):
    next(epoch_batches(0, 4, 0, 0))


def test_sgd_matches_pytorch_update_rule():
  # torch.optim.SGD(lr, momentum, weight_decay): b = mu*b + (g + wd*p); p -= lr*b.
  cfg = OptimSpec(lr=0.1, momentum=0.9, weight_decay=0.01)
  tx = cfg()
  p = jnp.array([1.0, -2.0])
  g1, g2 = jnp.array([0.5, 0.5]), jnp.array([-1.0, 2.0])
  state = tx.init(p)
  u, state = tx.update(g1, state, p)
  p1 = p + u
  u, state = tx.update(g2, state, p1)
  p2 = p1 + u
  b1 = g1 + 0.01 * p
  e1 = p - 0.1 * b1
  b2 = 0.9 * b1 + g2 + 0.01 * e1
  np.testing.assert_allclose(p2, e1 - 0.1 * b2, rtol=1e-6)


def test_cosine_schedule_reaches_zero_and_warmup_ramps_from_zero():
  lr = OptimSpec(lr=0.5, schedule='cosine', total_steps=10).learning_rate()
  assert float(lr(0)) == pytest.approx(0.5) and float(lr(10)) == pytest.approx(0.0)
  with pytest.raises(ValueError, match='schedule'):
    OptimSpec(schedule='linear')
  ramp = OptimSpec(lr=1.0, warmup=2).learning_rate()  # DDPM training's linear warm-up
  assert [float(ramp(i)) for i in range(4)] == [0.0, 0.5, 1.0, 1.0]
  assert OptimSpec(lr=1.0).learning_rate() == 1.0  # no warm-up: the first step at lr


def test_one_spec_builds_single_chains_and_fast_slow_pairs():
  """Fast-slow pairs and single chains come from one spec; each builder refuses the other
  kind, fields of one kind are refused on the other, and what a step needs follows from
  the spec."""
  params = {'w': jnp.ones(3)}
  pair = OptimSpec(lr=0.1, momentum=0.0, weight_decay=0.0, every=2, forget_weight=2.0,
                   total_steps=4)
  forget_tx, retain_tx = fast_slow_pair(pair)
  state = forget_tx.init(params)
  g = {'w': jnp.array([1.0, 0.0, 0.0])}
  u, state = forget_tx.update(g, state, params)  # forget weight 2, lr 0.1
  np.testing.assert_allclose(u['w'], [-0.2, 0.0, 0.0], rtol=1e-6)
  u, state = retain_tx.update(g, state, params)  # the retain step: unweighted
  np.testing.assert_allclose(u['w'], [-0.1, 0.0, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match='fast_slow_pair'):
    make_tx(pair)
  with pytest.raises(ValueError, match='every > 0'):
    fast_slow_pair(OptimSpec())
  with pytest.raises(ValueError, match='forget_weight'):
    OptimSpec(every=1)
  with pytest.raises(ValueError, match='precondition belong to a fast-slow pair'):
    OptimSpec(precondition='cg')
  with pytest.raises(ValueError, match='l1 are not part of a fast-slow pair'):
    OptimSpec(every=1, forget_weight=1.0, l1=1e-4)
  assert OptimSpec(forget_weight=1.0).joint and not pair.joint
  assert not OptimSpec(forget_weight=1.0, lookahead_lr=0.1).forget_grads_at_params
  assert OptimSpec(forget_weight=1.0, lookahead_lr=0.1,
                   lookahead_virtual='forget').forget_grads_at_params
  assert dataclasses.replace(pair, precondition='cg').retain_loss_in_forget_step
  assert not pair.retain_loss_in_forget_step
  toy = Phase(np.zeros((4, 2, 2, 1), np.float32), np.zeros(4, np.int32), None)
  with pytest.raises(ValueError, match='fit_fast_slow takes a spec with every > 0'):
    fit({}, [toy], steps=1, batch_size=2, optim=pair, seed=0, progress=False)
  with pytest.raises(TypeError, match='OptimSpec'):
    fit({}, [toy], steps=1, batch_size=2, optim=optax.sgd(0.1), seed=0, progress=False)


def test_train_step_padding_weights_do_not_change_gradient(toy):
  model = make_model('resnet1', toy.num_classes)
  variables = model.init(jax.random.key(0), toy.x_train[:1])
  tx = optax.sgd(0.1)
  x, y = toy.x_train[:8], toy.y_train[:8]
  key = jax.random.key(0)
  step = jax.jit(functools.partial(train_step, objective=Classifier(model, losses.cross_entropy),
                                   tx=tx))
  s_a, m_a = step(init_state(variables, tx), x, y, jnp.ones(8), key)
  # Same 8 examples, with 4 wrapped-around repeats weighted 0: BatchNorm sees 12 examples,
  # so compare only the loss value, which must ignore the repeats.
  x2, y2 = np.concatenate([x, x[:4]]), np.concatenate([y, y[:4]])
  w2 = np.concatenate([np.ones(8), np.zeros(4)]).astype(np.float32)
  _, m_b = step(init_state(variables, tx), x2, y2, w2, key)
  assert int(s_a.step) == 1
  logits = model.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(m_a['loss'], losses.cross_entropy(logits, y).mean(), rtol=1e-5)
  assert np.isfinite(float(m_b['loss']))


def test_training_learns_toy_problem_and_is_deterministic(toy):
  model = make_model('resnet1', toy.num_classes)
  cfg = TrainConfig(epochs=25, batch_size=16, lr=0.1)
  a = train_classifier(model, toy.x_train, toy.y_train, cfg, seed=0, progress=False)
  b = train_classifier(model, toy.x_train, toy.y_train, cfg, seed=0, progress=False)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  acc = np.mean(predict(model, a, toy.x_test).argmax(-1) == toy.y_test)
  assert acc > 0.9


def test_fit_runs_phases_in_order_and_reports_history(toy):
  model = make_model('resnet1', toy.num_classes)
  variables = model.init(jax.random.key(0), toy.x_train[:1])
  phases = [Phase(toy.x_train[:10], toy.y_train[:10], Classifier(model, losses.gradient_ascent),
                  'forget'),
            Phase(toy.x_train[10:], toy.y_train[10:], Classifier(model, losses.cross_entropy),
                  'retain')]
  out, history = fit(variables, phases, epochs=2, batch_size=16,
                     optim=OptimSpec(lr=0.01), seed=0, progress=False)
  assert history['forget'].shape == (2,) and history['retain'].shape == (8,)
  assert np.all(history['forget'] <= 0)  # -CE
  assert jax.tree.structure(out) == jax.tree.structure(variables)


def test_predict_handles_any_length(toy):
  model = make_model('resnet1', toy.num_classes)
  variables = model.init(jax.random.key(0), toy.x_train[:1])
  full = predict(model, variables, toy.x_train, batch_size=7)
  assert full.shape == (60, 3)
  np.testing.assert_allclose(full[:5], predict(model, variables, toy.x_train[:5]), atol=1e-5)
  with pytest.raises(ValueError, match='empty'):
    predict(model, variables, toy.x_train[:0])


def test_fit_callback_counts_steps_without_a_progress_bar(toy):
  from jaxunlearn.losses import cross_entropy
  from jaxunlearn.models import make_model
  from jaxunlearn.train import Phase, fit, init_variables
  model = make_model('resnet1', toy.num_classes, 4)
  variables = init_variables(model, toy.x_train.shape[1:], 0)
  seen = []
  fit(variables, [Phase(toy.x_train, toy.y_train, Classifier(model, cross_entropy))], epochs=2,
      batch_size=16, optim=OptimSpec(lr=0.01), seed=0, progress=False,
      callback=lambda n, v: seen.append(n), callback_every=3)
  assert seen == [3, 6, 8]  # 60 examples / 16 = 4 steps per epoch, 8 in all


def test_progress_in_a_log_is_a_line_every_few_seconds(capsys):
  """Without a terminal (CI, nohup, a pipe), 150 updates over ~1.5 s print a couple of bar
  refreshes; plain tqdm prints one per 0.1 s."""
  import time
  from tqdm.auto import tqdm
  from jaxunlearn.train import progress_bar

  def refreshes(make):
    bar = make(total=150, desc='loop')
    for _ in range(150):
      time.sleep(0.01)
      bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert 'loop' in err
    return err.count('\r') + err.count('\n')
  assert refreshes(progress_bar) <= 4 < 8 <= refreshes(tqdm)


@pytest.mark.parametrize('chunk', [1 << 24, 5])
def test_step_guard_sees_a_non_finite_value_in_any_leaf_and_chunk(monkeypatch, chunk):
  """finish_step's check flattens the leaves into chunks (one reduction each, not one per
  leaf): a NaN or inf in any leaf of any chunk, of any float dtype, skips the step; integer
  leaves are not checked; a finite tree passes."""
  import jaxunlearn.step as S
  monkeypatch.setattr(S, 'FLAT_CHUNK', chunk)
  tree = {'a': jnp.ones((3,)), 'b': jnp.ones((2, 4), jnp.bfloat16), 'c': jnp.arange(5),
          'd': jnp.ones((7,)), 'e': jnp.float32(2.0)}
  check = jax.jit(S._all_finite)
  assert bool(check(tree))
  if chunk == 5:
    assert len(S._flat_chunks([tree['a'], tree['b'], tree['d'], tree['e']])) == 4
  for name, bad in [('a', jnp.nan), ('b', jnp.inf), ('d', -jnp.inf), ('e', jnp.nan)]:
    leaf = tree[name]
    damaged = dict(tree, **{name: leaf.reshape(-1).at[-1].set(bad).reshape(leaf.shape)})
    assert not bool(check(damaged)), name
  assert bool(check({'i': jnp.array([2**31 - 1], jnp.int32), 'f': jnp.zeros(3)}))


def test_init_variables_compiled_once_equals_flax_init_op_by_op():
  """init_variables runs one compiled program per (model, shape) for every seed: the same
  values, bit for bit, as flax's init op by op."""
  from jaxunlearn.train import init_variables
  model = make_model('resnet1', 10, 4)
  for seed in (0, 3):
    want = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)), train=False)
    got = init_variables(model, (8, 8, 1), seed)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', ['unet', 'dit'])
def test_generative_init_at_o1_equals_flax_init(name):
  """init_unet compiles the initialiser with LLVM's -O1 on the CPU (jit_run_once): the values
  are flax's init compiled at the default level, bit for bit, for a UNet and a DiT."""
  from jaxunlearn.diffusion.train import init_unet
  from jaxunlearn.models import digits_dit, digits_unet
  model = digits_unet((8, 16)) if name == 'unet' else digits_dit()
  got = init_unet(model, (8, 8, 1), 5)
  want = jax.jit(model.init)(jax.random.key(5), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)),
                             jnp.zeros((1,), jnp.int32))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)



def test_evaluation_at_o1_equals_the_default_level():
  """predict (one device) compiles the eval-mode forward pass with LLVM's -O1 on the CPU
  (jit_run_once): the same logits, bit for bit, as the forward pass compiled at the default
  level, padded last batch included."""
  from jaxunlearn.step import predict
  from jaxunlearn.train import init_variables
  model = make_model('resnet18', 10, 8)
  variables = init_variables(model, (8, 8, 1), 0)
  x = np.random.default_rng(0).normal(size=(37, 8, 8, 1)).astype(np.float32)
  got = predict(model, variables, x, batch_size=16)
  padded = np.concatenate([x, np.zeros((48 - 37, 8, 8, 1), np.float32)])
  want = jax.jit(lambda v, b: model.apply(v, b, train=False))
  want = np.concatenate([np.asarray(want(variables, padded[i:i + 16])) for i in (0, 16, 32)])
  np.testing.assert_array_equal(got, want[:37])
