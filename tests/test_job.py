"""The shared run skeleton (jaxunlearn.job.run_job) with a toy task plug-in: no model, so
what is checked is the skeleton's own behaviour (resume, failures, RTE, given rows)."""

import dataclasses
import json
import time

import numpy as np
import pytest

from jaxunlearn.checkpoint import fingerprint
from jaxunlearn.job import Job, SeedRun, run_job
from jaxunlearn.train import NonFiniteError


@dataclasses.dataclass(frozen=True)
class Config:
  seeds: tuple = (0, 1)
  methods: tuple = ('given', 'good', 'diverges', 'late')
  max_nonfinite: int = 3
  checkpoint_every: int = 0
  progress: bool = False


@dataclasses.dataclass(frozen=True)
class Task:
  seed: int
  variables: object = None
  control: object = None
  callback: object = None
  callback_every: int = 0


class Watch:
  """A monitor that takes 0.2 s per call: the skeleton must leave that out of rte_s."""

  every, seconds = 1, 0.0

  def __call__(self, updates, variables):
    time.sleep(0.2)
    self.seconds += 0.2

  def report(self):
    return {'watched_s': self.seconds}


@dataclasses.dataclass
class Method:
  fn: object
  calls: list = dataclasses.field(default_factory=list)

  def run(self, task, hp):
    self.calls.append(task.seed)
    return self.fn(task, hp)


def _good(task, hp):
  task.callback(1, None)
  return hp * 10 + task.seed


def _diverges(task, hp):
  raise NonFiniteError('3 non-finite steps in a row')


class ToyRun(SeedRun):
  def __init__(self, seed):
    self.task = Task(seed, {'w': np.full(3, seed, np.float32)})
    self.original_key = f'toy-{seed}'

  def original(self):
    return {'score': -1.0}

  def given(self, name):
    return {'score': 0.5} if name == 'given' else None

  def monitor(self, name, hp, original):
    return Watch() if name == 'good' else None

  def score(self, name, variables):
    return {'score': float(variables)}


class ToyJob(Job):
  def __init__(self, registry, config=Config()):
    self.config, self.registry, self.seeds_built = config, registry, []

  def hparams(self, progress):
    return {'good': 2, 'diverges': 0, 'late': 3}

  def seed(self, seed):
    self.seeds_built.append(seed)
    return ToyRun(seed)

  def results(self, per_seed, originals, hparams):
    return {'per_seed': per_seed, 'originals': originals}

  def write(self, results, out_dir):
    (out_dir / 'results.json').write_text(json.dumps(results))


class Killed(Exception):
  pass


def test_run_job_resumes_records_failures_and_times_runs_without_their_monitor(tmp_path):
  def late(task, hp):
    if task.seed == 1 and not resumed:
      raise Killed  # the process dies during seed 1's last method
    return hp * 100 + task.seed

  registry = {'good': Method(_good), 'diverges': Method(_diverges), 'late': Method(late)}
  out, resumed = tmp_path / 'out', False
  with pytest.raises(Killed):
    run_job(ToyJob(registry), out)
  progress = json.loads((out / 'progress.json').read_text())
  assert set(progress['seeds']['1']['methods']) == {'given', 'good', 'diverges'}
  resumed = True
  job = ToyJob(registry)
  results = run_job(job, out)
  assert job.seeds_built == [1]  # seed 0 was finished: not prepared again
  assert registry['good'].calls == [0, 1]  # nothing finished runs twice
  assert registry['late'].calls == [0, 1, 1]
  rows = results['per_seed']
  assert [r['score'] for r in rows['good']] == [20.0, 21.0]
  assert [r['score'] for r in rows['late']] == [300.0, 301.0]
  assert rows['given'] == [{'score': 0.5}] * 2 and results['originals'] == [{'score': -1.0}] * 2
  assert results['failures'] == {'diverges': {'0': '3 non-finite steps in a row',
                                              '1': '3 non-finite steps in a row'}}
  assert rows['diverges'][0] == {'error': '3 non-finite steps in a row', 'skipped_steps': 0}
  good = rows['good'][0]
  assert good['watched_s'] == pytest.approx(0.2) and 0 <= good['rte_s'] < 0.1
  assert json.loads((out / 'results.json').read_text())['failures'] == results['failures']
  # each seed's original is identified by its settings' key and its weights' fingerprint
  assert results['original_models'] == {
      str(s): {'key': f'toy-{s}', 'fingerprint': fingerprint({'w': np.full(3, s, np.float32)})}
      for s in (0, 1)}
  assert results['original_models']['0']['fingerprint'] != (
      results['original_models']['1']['fingerprint'])
  assert not (out / 'progress.json').exists()


def test_run_job_refuses_to_resume_another_configuration(tmp_path):
  registry = {'good': Method(_good), 'diverges': Method(_diverges),
              'late': Method(lambda task, hp: (_ for _ in ()).throw(Killed()))}
  with pytest.raises(Killed):
    run_job(ToyJob(registry), tmp_path)
  with pytest.raises(ValueError, match='differs in seeds'):
    run_job(ToyJob(registry, Config(seeds=(0,))), tmp_path)


def test_results_record_their_provenance(tmp_path, monkeypatch):
  """results.json says what made it: version, commit of this checkout, package versions,
  platform, devices, command line and the full resolved configuration."""
  import importlib.metadata
  import subprocess
  import sys
  from pathlib import Path
  import jaxunlearn
  from jaxunlearn import provenance as P
  monkeypatch.setattr(sys, 'argv', ['jaxunlearn', 'run', '--seeds', '0'])
  monkeypatch.setenv('JAXUNLEARN_CPU_CONV', 'xla')
  monkeypatch.setenv('JAXUNLEARN_CACHE', str(tmp_path / 'cache'))
  registry = {'good': Method(_good)}
  run_job(ToyJob(registry, Config(seeds=(0,), methods=('good',))), tmp_path / 'out')
  record = json.loads((tmp_path / 'out' / 'results.json').read_text())['provenance']
  assert record['jaxunlearn'] == jaxunlearn.__version__
  assert record['packages']['jax'] == importlib.metadata.version('jax')
  assert record['packages']['optax'] == importlib.metadata.version('optax')
  assert record['config'] == {'seeds': [0], 'methods': ['good'], 'max_nonfinite': 3,
                              'checkpoint_every': 0, 'progress': False}
  assert record['command'] == 'jaxunlearn run --seeds 0'
  # what changes a run is recorded, where files go is not
  assert record['environment']['JAXUNLEARN_CPU_CONV'] == 'xla'
  assert 'JAXUNLEARN_CACHE' not in record['environment']
  assert record['backend'] == 'cpu' and record['devices']['count'] >= 1
  repo = Path(jaxunlearn.__file__).resolve().parent.parent
  head = subprocess.run(['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True,
                        text=True)
  if head.returncode == 0:  # a checkout (CI's fresh clone): its commit is recorded
    assert record['git']['commit'] == head.stdout.strip()
  assert P.git_state(tmp_path) is None  # no repository there: no commit claimed
  assert P.package_versions(('no-such-distribution-xyz',)) == {'no-such-distribution-xyz': None}


def test_only_a_change_of_code_makes_a_checkout_dirty(tmp_path):
  """Re-measuring results in a checkout rewrites experiments/results and the docs; a run
  measured after that is still of the commit's code, one after a code change is not."""
  import shutil
  import subprocess

  from jaxunlearn import provenance as P
  if shutil.which('git') is None:
    pytest.skip('git is not installed')
  git = lambda *a: subprocess.run(['git', '-C', str(tmp_path), *a], check=True,
                                  capture_output=True)
  git('init', '-q')
  files = ('pkg/code.py', 'experiments/results/r/results.json', 'docs/a.md', 'README.md')
  for name in files:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text('1\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
  pkg = tmp_path / 'pkg'
  assert P.git_state(pkg)['dirty'] is False
  for name in files[1:]:
    (tmp_path / name).write_text('2\n')
  (tmp_path / 'untracked.py').write_text('x\n')
  assert P.git_state(pkg)['dirty'] is False
  (tmp_path / 'pkg/code.py').write_text('2\n')
  assert P.git_state(pkg)['dirty'] is True
