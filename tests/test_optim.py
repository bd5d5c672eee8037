"""The optimizer spec's chains: the learning rate and the cosine's horizon as numbers of the
optimizer state, so one compiled step serves every value of them, with the trajectory of
the chain that holds them as constants, bit for bit."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import losses
from jaxunlearn.models import make_model
from jaxunlearn.objectives import Classifier
from jaxunlearn.optim import OptimSpec, _cosine_decay, _optimizer
from jaxunlearn.step import compiled_train_step, init_state, train_step
from jaxunlearn.train import init_variables


@pytest.mark.parametrize('peak, horizon', [(0.1, 40), (0.1, 120), (0.013, 1000), (1e-4, 7),
                                           (0.05, 1)])
def test_cosine_with_numbers_as_arrays_is_optax_schedule_bit_for_bit(peak, horizon):
  """XLA folds optax's constants (pi / horizon, 0.5 * peak) into the compiled schedule; ours
  takes them as arrays and computes the same float32 operations, so the same values."""
  theirs = jax.jit(optax.cosine_decay_schedule(peak, horizon))
  ours = jax.jit(lambda count, p, h: _cosine_decay(p, h)(count))
  counts = np.arange(horizon + 3, dtype=np.int32)
  want = np.array([theirs(jnp.int32(c)) for c in counts])
  got = np.array([ours(jnp.int32(c), jnp.float32(peak), jnp.float32(horizon)) for c in counts])
  np.testing.assert_array_equal(got, want)
  vectorised = jax.jit(jax.vmap(ours, in_axes=(0, None, None)))
  np.testing.assert_array_equal(vectorised(counts, jnp.float32(peak), jnp.float32(horizon)),
                                jax.jit(jax.vmap(optax.cosine_decay_schedule(peak, horizon)))(
                                    counts))


class _Compiles(logging.Handler):
  def __init__(self):
    super().__init__()
    self.steps = 0

  def emit(self, record):
    self.steps += 'Finished XLA compilation of jit(step)' in record.getMessage()


def _toy(seed):
  """A tiny ResNet, its variables and one batch ``(x, y, w)`` with a key."""
  model = make_model('resnet1', 10, 4)
  variables = init_variables(model, (8, 8, 1), 0)
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  y, w = rng.integers(0, 10, 16).astype(np.int32), np.ones(16, np.float32)
  return model, variables, x, y, w, jax.random.key(0)


def test_specs_differing_in_lr_horizon_and_schedule_share_one_step_with_their_own_numbers():
  model, variables, x, y, w, key = _toy(0)
  objective = Classifier(model, losses.cross_entropy)
  a = OptimSpec(lr=0.1, schedule='cosine', total_steps=5)
  b = OptimSpec(lr=0.02, schedule='cosine', total_steps=50)
  c = OptimSpec(lr=0.03)
  assert a.numbers_in_state and b.numbers_in_state and c.numbers_in_state
  assert compiled_train_step(objective, a) is compiled_train_step(objective, b)
  # a constant rate is the cosine over an infinite horizon: the same program
  assert compiled_train_step(objective, a) is compiled_train_step(objective, c)
  momentum = OptimSpec(lr=0.03, momentum=0.5)
  assert compiled_train_step(objective, c) is not compiled_train_step(objective, momentum)
  warm = OptimSpec(lr=0.1, schedule='cosine', total_steps=5, warmup=2)
  assert not warm.numbers_in_state and warm.program() is warm

  counter = _Compiles()
  logger = logging.getLogger('jax._src.dispatch')
  logger.addHandler(counter)
  try:
    with jax.log_compiles():
      for spec in (a, b, c):
        shared = compiled_train_step(objective, spec)
        state = init_state(variables, spec())
        constants = _optimizer(spec, spec.learning_rate())  # the numbers as constants
        ref_state = init_state(variables, constants)
        ref = jax.jit(functools.partial(train_step, objective=objective, tx=constants))
        for _ in range(7):  # past a's horizon
          state, _ = shared(state, x, y, w, key)
          ref_state, _ = ref(ref_state, x, y, w, key)
        for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
          np.testing.assert_array_equal(got, want)
  finally:
    logger.removeHandler(counter)
  # one program for a, b and c (the references compile as jit(train_step))
  assert counter.steps == 1


@pytest.mark.parametrize('clip_norm', [0.0, 0.5])
def test_ascent_is_descent_on_the_negated_loss_bit_for_bit_in_the_plain_program(clip_norm):
  """GA as ``ascent`` on CE (the gradient's sign a number of the state) takes the steps of
  descent on -CE exactly, and runs the plain CE step's compiled program."""
  model, variables, x, y, w, key = _toy(1)
  ce = Classifier(model, losses.cross_entropy)
  up = OptimSpec(lr=0.05, schedule='cosine', total_steps=9, clip_norm=clip_norm, ascent=True)
  assert compiled_train_step(ce, up) is compiled_train_step(
      ce, OptimSpec(lr=0.1, clip_norm=clip_norm))  # the plain step's program
  down = OptimSpec(lr=0.05, schedule='cosine', total_steps=9, clip_norm=clip_norm)
  neg = Classifier(model, losses.gradient_ascent)
  runs = []
  for objective, spec in ((ce, up), (neg, down)):
    step, state = compiled_train_step(objective, spec), init_state(variables, spec())
    for _ in range(6):
      state, _ = step(state, x, y, w, key)
    runs.append(state)
  for got, want in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
    np.testing.assert_array_equal(got, want)
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(runs[0].params),
                                                jax.tree.leaves(variables['params']))]
  assert max(moved) > 1e-3
  # the constant chain (no numbers in the state) flips the sign as a constant
  for a, b in zip(jax.tree.leaves(_optimizer(up, 0.1).update(variables['params'],
                                                             _optimizer(up, 0.1).init(
                                                                 variables['params']),
                                                             variables['params'])[0]),
                  jax.tree.leaves(variables['params'])):
    np.testing.assert_allclose(a, 0.1 * (1 - 5e-4) * b, rtol=1e-6)
  with pytest.raises(ValueError, match='ascent flips the sign'):
    OptimSpec(ascent=True, l1=0.1)


def test_a_resumed_state_takes_the_specs_numbers_and_keeps_what_it_learned():
  """The learning rate and horizon in the state are the spec's constants: a checkpoint that
  stored them otherwise (a constant rate's finite horizon, before it became infinite)
  resumes with the spec's; parameters and momentum stay the checkpoint's."""
  from jaxunlearn.optim import INJECTED_STATES, injected_states
  from jaxunlearn.train import _numbers_of_the_spec
  model = make_model('resnet1', 10, 4)
  variables = init_variables(model, (8, 8, 1), 0)
  spec = OptimSpec(lr=0.03, total_steps=20)
  made_now = jax.device_get(init_state(variables, spec()))
  is_injected = lambda x: isinstance(x, INJECTED_STATES)
  injected = lambda s: injected_states(s.opt_state)[0]
  assert float(injected(made_now).hyperparams['horizon']) == np.inf
  # a checkpoint of some steps later, written when the horizon was the loop's length
  old = jax.tree.map(lambda x: np.asarray(x) + 1, made_now)
  old = old._replace(opt_state=jax.tree.map(
      lambda x: x._replace(hyperparams={**x.hyperparams, 'horizon': np.float32(20)})
      if is_injected(x) else x, old.opt_state, is_leaf=is_injected))
  got = _numbers_of_the_spec(made_now, old)
  assert float(injected(got).hyperparams['horizon']) == np.inf
  assert float(injected(got).hyperparams['learning_rate']) == np.float32(0.03)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(old.params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(injected(got).inner_state),
                  jax.tree.leaves(injected(old).inner_state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('loss', [losses.random_label_cross_entropy,
                                  losses.random_label_cross_entropy_with_true])
def test_random_labels_drawn_beside_the_step_give_the_same_steps_in_the_plain_program(loss):
  """RL's forget pass: the labels drawn beside the compiled step (the same key, the same
  draw) make it the plain CE step's program, with the steps of the in-step draw bit for
  bit."""
  model, variables, x, y, w, key = _toy(2)
  spec = OptimSpec(lr=0.05)
  rl = Classifier(model, loss)
  beside = compiled_train_step(rl, spec)
  assert compiled_train_step(Classifier(model, losses.cross_entropy), spec) is not beside
  inside = jax.jit(functools.partial(train_step, objective=rl, tx=spec()))
  a, b = init_state(variables, spec()), init_state(variables, spec())
  for _ in range(5):
    a, _ = beside(a, x, y, w, key)
    b, _ = inside(b, x, y, w, key)
  for got, want in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(got, want)
  counter = _Compiles()
  logger = logging.getLogger('jax._src.dispatch')
  logger.addHandler(counter)
  try:
    with jax.log_compiles():
      plain = compiled_train_step(Classifier(model, losses.cross_entropy), spec)
      plain(init_state(variables, spec()), x, y, w, key)
  finally:
    logger.removeHandler(counter)
  assert counter.steps == 0  # the plain step is the program RL's pass compiled
