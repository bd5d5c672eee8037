"""Resume after a kill, atomic checkpoints, and non-finite steps.

In-process tests interrupt a loop by raising from its callback; the subprocess tests
SIGKILL a real ``jaxunlearn run`` (and a process in the middle of saving) and check that
the same command started again ends with the numbers of a run never interrupted.
"""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import losses
from jaxunlearn.checkpoint import CheckpointError, LoopCheckpoint
from jaxunlearn.data import make_split
from jaxunlearn.methods import UnlearnTask, get_method, resolve_hparams
from jaxunlearn.models import make_model
from jaxunlearn.optim import OptimSpec
from jaxunlearn.train import LoopControl, NonFiniteError, TrainConfig, fit, train_classifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def task():
  from conftest import synthetic_dataset
  ds = synthetic_dataset()
  split = make_split(ds, 'class:0')
  model = make_model('resnet1', ds.num_classes, 4)
  variables = train_classifier(model, ds.x_train, ds.y_train,
                               TrainConfig(epochs=4, batch_size=16), seed=0, progress=False)
  return UnlearnTask(model, variables, ds.x_train[split.forget], ds.y_train[split.forget],
                     ds.x_train[split.retain], ds.y_train[split.retain], ds.num_classes,
                     seed=0, progress=False)


class _Killed(Exception):
  pass


def _kill_at(update):
  def callback(n, variables):
    if n == update:
      raise _Killed
  return callback


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


# One method per loop: fit (rl), fit_joint with a saliency mask (salun_joint), the fast-slow
# loop with a mask and its cosine-decayed weights (sfron), the look-ahead steps (lur).
@pytest.mark.parametrize('name, hp', [
    ('rl', {'epochs': 3}),
    ('salun_joint', {'epochs': 3}),
    ('sfron', {'iterations': 8, 'every': 2}),
    ('lur', {'epochs': 3, 'order': 'first'}),
    ('scissorhands', {'epochs': 3}),  # one forget pass per epoch, the projection's memory
])
def test_interrupted_method_resumes_bit_identical(task, tmp_path, name, hp):
  hp = resolve_hparams(name, {**hp, 'batch_size': 16})
  method = get_method(name)
  reference = method.run(task, hp)
  directory = tmp_path / name
  first = LoopControl(LoopCheckpoint(directory, every=2))
  with pytest.raises(_Killed):  # dies after update 5, before the save at 6
    method.run(dataclasses.replace(task, control=first, callback=_kill_at(5),
                                   callback_every=1), hp)
  assert LoopCheckpoint(directory).steps() == [2, 4]
  again = LoopControl(LoopCheckpoint(directory, every=2))
  resumed = method.run(dataclasses.replace(task, control=again), hp)
  assert again.resumed_from == 4
  _assert_trees_equal(resumed, reference)


@pytest.mark.parametrize('name, mode', [pytest.param('rl', 'pmap', marks=pytest.mark.slow),
                                        ('sfron', 'shard')])
def test_interrupted_multi_device_run_resumes_bit_identical(task, tmp_path, name, mode):
  """The checkpoint holds one host copy of the state; it goes back onto the devices."""
  from jaxunlearn.parallel import Parallel
  task = dataclasses.replace(task, parallel=Parallel(mode, 4, shard_params=mode == 'shard',
                                                     min_shard_size=1))
  hp = resolve_hparams(name, {'batch_size': 16, **({'iterations': 6, 'every': 2}
                                                    if name == 'sfron' else {'epochs': 2})})
  method = get_method(name)
  reference = method.run(task, hp)
  with pytest.raises(_Killed):
    method.run(dataclasses.replace(task, control=LoopControl(LoopCheckpoint(tmp_path, 2)),
                                   callback=_kill_at(3), callback_every=1), hp)
  control = LoopControl(LoopCheckpoint(tmp_path, 2))
  _assert_trees_equal(method.run(dataclasses.replace(task, control=control), hp), reference)
  assert control.resumed_from == 2


def test_resumed_fit_returns_the_whole_history_and_callback_state(task, tmp_path):
  variables = task.variables
  phases = [task.forget_phase(losses.random_label_cross_entropy),
            task.retain_phase(losses.cross_entropy)]
  kwargs = dict(epochs=3, batch_size=16, optim=OptimSpec(lr=0.01), seed=3, progress=False)
  ref_vars, ref_history = fit(variables, phases, **kwargs)

  class Recorder:  # a stateful callback, as the gradient-alignment probe
    def __init__(self, stop=None):
      self.seen, self.stop = [], stop

    def __call__(self, n, v):
      self.seen.append(n)
      if n == self.stop:
        raise _Killed

    def state_dict(self):
      return {'seen': self.seen}

    def load_state_dict(self, state):
      self.seen = list(state['seen'])

  ckpt = lambda: LoopCheckpoint(tmp_path, every=3)
  with pytest.raises(_Killed):
    fit(variables, phases, callback=Recorder(stop=8), callback_every=1,
        control=LoopControl(ckpt()), **kwargs)
  recorder = Recorder()
  out, history = fit(variables, phases, callback=recorder, callback_every=1,
                     control=LoopControl(ckpt()), **kwargs)
  _assert_trees_equal(out, ref_vars)
  assert history.keys() == ref_history.keys()
  for k in history:
    np.testing.assert_array_equal(history[k], ref_history[k])
  total = sum(len(ref_history[k]) for k in ref_history)
  assert recorder.seen == list(range(1, total + 1))  # 1..6 from the checkpoint, then 7..


def _save_two(tmp_path):
  like = {'w': np.zeros((4, 3), np.float32), 'step': np.zeros((), np.int32)}
  ckpt = LoopCheckpoint(tmp_path / 'loop', every=1)
  for n in (1, 2):
    ckpt.save(n, {'w': np.full((4, 3), n, np.float32), 'step': np.int32(n)},
              {'history': {}, 'seconds': float(n), 'overhead_seconds': 0.0})
  return ckpt, like


def _data_files(path):
  return [p for p in path.rglob('*') if p.is_file() and p.stat().st_size > 0 and
          ('/d/' in str(p) or p.name == '_METADATA')]


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  ckpt, like = _save_two(tmp_path)
  assert ckpt.steps() == [1, 2]
  for f in _data_files(tmp_path / 'loop' / '2'):
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 3])  # truncated
  with pytest.warns(UserWarning, match=r'checkpoint .*loop/2 cannot be read.*moved to .*'
                                       r'previous one, step 1'):
    step, state, record = LoopCheckpoint(tmp_path / 'loop').restore(like)
  assert step == 1 and record['seconds'] == 1.0
  np.testing.assert_array_equal(state['w'], np.ones((4, 3)))


def test_a_loop_that_fell_back_saves_over_the_damaged_step(tmp_path):
  """The loop resumed from step 1 reaches step 2 again and saves it: the damaged step 2
  was moved aside (named in the warning), not left to block that save on every rerun."""
  _, like = _save_two(tmp_path)
  for f in _data_files(tmp_path / 'loop' / '2'):
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 3])
  ckpt = LoopCheckpoint(tmp_path / 'loop', every=1)
  with pytest.warns(UserWarning, match=r'moved to .*loop\.damaged-2'):
    assert ckpt.restore(like)[0] == 1
  ckpt.save(2, {'w': np.full((4, 3), 7, np.float32), 'step': np.int32(2)}, {'seconds': 3.0})
  assert ckpt.steps() == [1, 2]
  step, state, _ = LoopCheckpoint(tmp_path / 'loop').restore(like)
  assert step == 2 and state['w'][0, 0] == 7
  assert (tmp_path / 'loop.damaged-2').is_dir()


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
  ckpt, like = _save_two(tmp_path)
  for step in ('1', '2'):
    for f in _data_files(tmp_path / 'loop' / step):
      f.write_bytes(b'garbage')
  with pytest.raises(CheckpointError, match=r'(?s)no checkpoint in .*loop can be read.*'
                                            r'loop/2.*loop/1.*Delete .*loop to run'):
    LoopCheckpoint(tmp_path / 'loop').restore(like)
  assert (tmp_path / 'loop' / '2').is_dir()  # nothing moved when nothing could be restored
  # A checkpoint of another loop (other shapes) is not silently reused either.
  ckpt, _ = _save_two(tmp_path / 'other')
  with pytest.raises(CheckpointError):
    LoopCheckpoint(tmp_path / 'other' / 'loop').restore({'w': np.zeros((5,), np.float32)})


def test_loop_checkpoint_rejects_bad_options(tmp_path):
  with pytest.raises(ValueError, match='every must be >= 1'):
    LoopCheckpoint(tmp_path, every=0)
  with pytest.raises(ValueError, match='keep at least 2'):
    LoopCheckpoint(tmp_path, keep=1)
  with pytest.raises(ValueError, match='max_nonfinite must be >= 1'):
    LoopControl(max_nonfinite=0)


_SAVER = textwrap.dedent('''
    import sys
    import numpy as np
    from jaxunlearn.checkpoint import LoopCheckpoint
    ckpt = LoopCheckpoint(sys.argv[1], every=1)
    start = (ckpt.steps() or [0])[-1]
    for n in range(start + 1, start + 10_000):
      state = {'a': np.full((1024, 1024), n, np.float32), 'b': np.full((3000,), -n, np.int32)}
      ckpt.save(n, state, {'history': {'x': [float(n)] * n}, 'seconds': 0.0,
                           'overhead_seconds': 0.0})
      print(n, flush=True)
''')


def test_kill_during_saves_leaves_a_restorable_checkpoint(tmp_path):
  """SIGKILL a process that does nothing but save 4 MB checkpoints, at varied moments
  (inside a save most of the time): every time the newest complete one restores intact."""
  script = tmp_path / 'saver.py'
  script.write_text(_SAVER)
  like = {'a': np.zeros((1024, 1024), np.float32), 'b': np.zeros((3000,), np.int32)}
  directory = tmp_path / 'ckpt'
  rng = np.random.default_rng(0)
  last = 0
  for attempt in range(4):
    proc = subprocess.Popen([sys.executable, str(script), str(directory)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.stdout.readline()  # one save done: the process is in its saving loop
    time.sleep(rng.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step, state, record = LoopCheckpoint(directory).restore(like)
    assert step > last  # progress, and the restored step is complete and consistent
    np.testing.assert_array_equal(state['a'], np.full((1024, 1024), step, np.float32))
    np.testing.assert_array_equal(state['b'], np.full((3000,), -step, np.int32))
    assert record['history']['x'] == [float(step)] * step and record['updates'] == step
    last = step


def _nan_sometimes(logits, y, key):
  """Cross-entropy, but NaN for the whole batch on about 40% of steps (by the step key)."""
  return jnp.where(jax.random.uniform(key) < 0.4, jnp.nan, losses.cross_entropy(logits, y, key))


def _always_nan(logits, y, key):
  return jnp.full(y.shape, jnp.nan)


def test_non_finite_steps_are_skipped_and_counted(task):
  seen = []
  control = LoopControl(max_nonfinite=None)
  out, history = fit(task.variables, [task.retain_phase(_nan_sometimes)],
                     epochs=4, batch_size=16, optim=OptimSpec(lr=0.05), seed=0,
                     progress=False, callback=lambda n, v: seen.append(v), callback_every=1,
                     control=control)
  losses_ = history['retain']
  bad = np.flatnonzero(~np.isfinite(losses_))
  assert 0 < len(bad) < len(losses_) and control.skipped == len(bad)
  before = [task.variables] + seen[:-1]
  for i in range(len(losses_)):  # params *and* BatchNorm statistics held on skipped steps
    same = all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(seen[i]), jax.tree.leaves(before[i])))
    assert same == (i in bad), i
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))


def test_too_many_non_finite_steps_in_a_row_stop_the_loop(task):
  control = LoopControl(max_nonfinite=3)
  with pytest.raises(NonFiniteError, match=r'3 steps in a row .*non-finite.*lower its '
                                           r'learning rate'):
    fit(task.variables, [task.retain_phase(_always_nan, 'ga')],
        epochs=5, batch_size=16, optim=OptimSpec(lr=0.05), seed=0, progress=False,
        control=control)
  assert 3 <= control.skipped <= 4  # checked one step behind, so that steps stay queued


TINY = ['--model', 'resnet1', '--width', '4', '--image-size', '8', '--quiet', '--parallel',
        'none', '--set', 'train.epochs=2', '--set', 'retrain.epochs=2', '--seeds', '0',
        '--checkpoint-every', '2', '--alignment-every', '3']


def _cli(args, out, cache):
  return [sys.executable, '-m', 'jaxunlearn.cli', 'run', *args, '--out', str(out),
          '--cache-dir', str(cache)]


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ''  # one CPU device, like a user's machine
  env['PYTHONPATH'] = str(ROOT)
  return env


def _kill_when(cmd, pattern, at_least):
  """Starts ``cmd`` and SIGKILLs it once a checkpoint step >= ``at_least`` exists under
  ``pattern`` (a glob); returns True if it was killed (False: it finished first)."""
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
  while proc.poll() is None:
    steps = [int(Path(p).name) for p in glob.glob(pattern) if Path(p).name.isdigit()]
    if steps and max(steps) >= at_least:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.005)
  raise AssertionError(f'finished before the kill point: {proc.stderr.read()[-3000:]}')


def _compare(out, ref):
  a = json.loads((out / 'results.json').read_text())
  b = json.loads((ref / 'results.json').read_text())
  for name, rows in b['per_seed'].items():
    for ra, rb in zip(a['per_seed'][name], rows):
      assert {k: v for k, v in ra.items() if k != 'rte_s'} == \
          {k: v for k, v in rb.items() if k != 'rte_s'}, name
  assert a['alignment'] == b['alignment']
  assert not (out / 'progress.json').exists() and not (out / 'checkpoints').exists()


def _reference(tmp_path, args):
  ref = tmp_path / 'reference'
  done = subprocess.run(_cli(args, ref, tmp_path / 'cache'), capture_output=True, text=True,
                        env=_env())
  assert done.returncode == 0, done.stderr[-3000:]
  return ref


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_results(tmp_path):
  """SIGKILL ``jaxunlearn run`` in SFR-on's loop (after RL finished), start it again."""
  args = TINY + ['--methods', 'retrain,rl,sfron', '--set', 'rl.epochs=2',
                 '--set', 'sfron.iterations=12']
  ref = _reference(tmp_path, args)
  out = tmp_path / 'killed'
  cmd = _cli(args, out, tmp_path / 'cache')
  _kill_when(cmd, str(out / 'checkpoints' / 'seed0-sfron' / '*'), 6)
  progress = json.loads((out / 'progress.json').read_text())
  assert set(progress['seeds']['0']['methods']) == {'retrain', 'rl'}
  done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
  assert done.returncode == 0, done.stderr[-3000:]
  _compare(out, ref)


@pytest.mark.slow
def test_run_killed_at_many_points_resumes_to_the_same_results(tmp_path):
  """Kills while training the original (resumed from the cache's partial checkpoint), in
  every kind of loop, and inside a checkpoint save; then the same command finishes."""
  args = TINY + ['--methods', 'retrain,ft,sfron,lur', '--set', 'ft.epochs=2',
                 '--set', 'sfron.iterations=12', '--set', 'lur.epochs=2',
                 '--set', 'train.epochs=4']
  ref = _reference(tmp_path, args)
  out, cache = tmp_path / 'killed', tmp_path / 'cache2'
  cmd = _cli(args, out, cache)
  _kill_when(cmd, str(cache / 'original-*' / 'partial' / '*'), 4)
  for name, at in (('ft', 4), ('sfron', 4), ('sfron', 10), ('lur', 2)):
    _kill_when(cmd, str(out / 'checkpoints' / f'seed0-{name}' / '*'), at)
  # Inside a save: as soon as orbax's temporary directory appears.
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
  while proc.poll() is None and not glob.glob(str(out / 'checkpoints' / '*' / '*tmp*')):
    time.sleep(0.001)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL  # killed, not finished
  done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
  assert done.returncode == 0, done.stderr[-3000:]
  _compare(out, ref)


def _loop_steps(root):
  """``{loop directory: [step directories]}`` of every checkpointed loop under ``root``."""
  loops = {}
  for p in glob.glob(str(root / '**' / '[0-9]*'), recursive=True):
    if Path(p).name.isdigit() and Path(p).is_dir() and '.damaged-' not in p:
      loops.setdefault(str(Path(p).parent), []).append(p)
  return loops


@pytest.mark.slow
def test_ten_kill_damage_rerun_cycles_end_with_the_uninterrupted_numbers(tmp_path):
  """Ten times: start the run, SIGKILL it at a random moment, and at every other kill that
  finds a loop with two checkpoints damage the newest one (its arrays truncated). The
  eleventh start finishes with the numbers of a run never interrupted (a damaged
  checkpoint is moved aside and its step saved again, never blocking the rerun)."""
  args = TINY + ['--methods', 'retrain,ft,sfron', '--set', 'ft.epochs=4',
                 '--set', 'sfron.iterations=30', '--set', 'train.epochs=6']
  ref = _reference(tmp_path, args)
  out, cache = tmp_path / 'killed', tmp_path / 'cache2'
  cmd = _cli(args, out, cache)
  rng = np.random.default_rng(0)
  damaged, kills, damaged_last = set(), 0, False
  for _ in range(10):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    before = {p for steps in {**_loop_steps(out), **_loop_steps(cache)}.values() for p in steps}
    # Once this start has saved a new checkpoint, kill it within the next 0.4 s at random
    # (in a step, in a save, between loops): short enough that even a fast machine has ten
    # starts' worth of work left (a CI run with 1.5 s finished after seven kills).
    while proc.poll() is None and before >= {
        p for steps in {**_loop_steps(out), **_loop_steps(cache)}.values() for p in steps}:
      time.sleep(0.01)
    deadline = time.monotonic() + rng.uniform(0.0, 0.4)
    while proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.01)
    if proc.poll() is not None:
      assert proc.returncode == 0, proc.stderr.read()[-3000:]
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    # A damaged checkpoint is known by its directory's inode: the rerun moves it aside and
    # saves the step again under the same name, which may then be damaged again.
    loops = {d: steps for d, steps in {**_loop_steps(out), **_loop_steps(cache)}.items()
             if len(steps) >= 2 and not {(p, os.stat(p).st_ino) for p in steps} & damaged}
    # Damage at every other chance (not at random): how many loops hold two checkpoints at a
    # kill depends on the machine's speed, and a coin flip left a CI run with one damage.
    if loops and not damaged_last:
      newest = max(loops[sorted(loops)[rng.integers(len(loops))]], key=lambda p: int(
          Path(p).name))
      for f in _data_files(Path(newest)):
        f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 3])
      damaged.add((newest, os.stat(newest).st_ino))
      damaged_last = True
    else:
      damaged_last = False
  done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
  assert done.returncode == 0, done.stderr[-3000:]
  _compare(out, ref)
  assert kills >= 8 and len(damaged) >= 2, (kills, damaged)  # the loop did kill and damage


def test_resume_refuses_another_configuration_and_restart_discards(tmp_path, capsys):
  from jaxunlearn.cli import main
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'progress.json').write_text(json.dumps({'config': {'scenario': 'class:5'}}))
  argv = ['run', '--out', str(out), '--no-cache', '--methods', 'retrain'] + TINY
  assert main(argv) == 2
  assert re_search(r'holds an unfinished run of another configuration .*differs in .*'
                   r'scenario.*--restart', capsys.readouterr().err)
  assert main(argv + ['--restart']) == 0
  assert (out / 'results.json').exists() and not (out / 'progress.json').exists()


def re_search(pattern, text):
  import re
  return re.search(pattern, text, re.S) is not None


@pytest.mark.slow
def test_a_diverging_method_is_recorded_and_the_others_finish(tmp_path, capsys):
  from jaxunlearn.cli import main
  out = tmp_path / 'out'
  argv = ['run', '--out', str(out), '--cache-dir', str(tmp_path / 'cache'), '--methods',
          'retrain,ga,ft', '--set', 'ga.lr=1e30', '--set', 'ft.epochs=1',
          '--max-nonfinite', '1'] + TINY
  assert main(argv) == 1
  captured = capsys.readouterr()
  assert 'ga failed on seed 0 (mean and std over the other seeds)' in captured.out
  assert re_search(r'jaxunlearn: ga failed on seed 0: ga: 1 steps in a row', captured.err)
  results = json.loads((out / 'results.json').read_text())
  assert 'non-finite' in results['failures']['ga']['0']
  assert results['per_seed']['ga'][0]['skipped_steps'] >= 1
  assert 'UA' not in results['methods']['ga'] and 'UA' in results['methods']['ft']
  assert results['per_seed']['ft'][0]['skipped_steps'] == 0
  assert (out / 'results.png').exists()
