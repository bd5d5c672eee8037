"""The run skeleton every job shares, with a small plug-in per task.

:func:`run_job` is the seed x method loop of ``jaxunlearn run`` (classification:
:func:`jaxunlearn.experiment.run_experiment`; generation:
:func:`jaxunlearn.diffusion.experiment.run_generation`): what a run has finished is kept
in :class:`RunProgress` so that a killed run resumes, each method runs under a
:class:`jaxunlearn.train.LoopControl` (checkpoints, the non-finite guard, the clock), a
run that diverges becomes a row with its error instead of ending the job, its RTE excludes
checkpoints and monitoring, and ``results.json`` and the plots are written at the end.

A task plugs in with a :class:`Job` (its methods' registry, the hyperparameters, how to
build a seed, the results dict and its files) whose :meth:`Job.seed` gives a
:class:`SeedRun` (the seed's task, the original's row, how to score weights, what to
watch during a run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Protocol

from jaxunlearn import __version__, checkpoint
from jaxunlearn.provenance import provenance
from jaxunlearn.train import LoopControl, NonFiniteError


class RunProgress:
  """What a run has finished, kept in ``out_dir/progress.json`` (written atomically after
  each method run) beside the loops' checkpoints in ``out_dir/checkpoints/``, so that the
  same command started again after a kill resumes. Both go once results.json is written.
  Without an output directory nothing is kept."""

  def __init__(self, out_dir, config, restart: bool = False):
    self.dir = None if out_dir is None else Path(out_dir)
    self.every = config.checkpoint_every
    identity = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ('progress', 'cache_dir', 'checkpoint_every')}
    identity = json.loads(json.dumps({**identity, 'version': __version__}, default=str))
    self.data = {'config': identity, 'tuning': {}, 'seeds': {}}
    self.resumed = False
    self.lock = None
    if self.dir is None:
      return
    if not checkpoint.is_primary():  # process 0 of several keeps the run's files
      checkpoint.sync(f'run directory {self.dir}')  # once process 0 has read (or discarded) it
      self._load(identity, restart=False)
      return
    checkpoint.check_output_dir(self.dir)
    # Held for the run (and freed if the process dies): a second run into this directory
    # stops here with the first one's pid.
    self.lock = checkpoint.FileLock(self.dir / '.jaxunlearn.lock').acquire()
    try:
      self._load(identity, restart)
    except BaseException:
      self.release()
      raise
    checkpoint.sync(f'run directory {self.dir}')

  def _load(self, identity: dict, restart: bool) -> None:
    if restart:
      self.discard()
    path = self.dir / 'progress.json'
    if path.is_file():
      try:
        old = json.loads(path.read_text())
      except json.JSONDecodeError as e:
        raise ValueError(f'{path} is damaged ({e}): pass --restart to discard the unfinished '
                         'run and start again') from None
      if old.get('config') != identity:
        theirs = old.get('config', {})
        differ = sorted(k for k in {*theirs, *identity} if theirs.get(k) != identity.get(k))
        raise ValueError(f'{self.dir} holds an unfinished run of another configuration (it '
                         f'differs in {", ".join(differ)}): run that command again to resume '
                         'it, pass --restart to discard it, or choose another --out')
      self.data, self.resumed = old, True

  def seed(self, seed: int) -> dict:
    return self.data['seeds'].setdefault(str(seed), {'methods': {}})

  def checkpoint(self, seed: int, name: str) -> checkpoint.LoopCheckpoint | None:
    if self.dir is None or not self.every:
      return None
    return checkpoint.LoopCheckpoint(self.dir / 'checkpoints' / f'seed{seed}-{name}',
                                     self.every)

  def save(self) -> None:
    if self.dir is not None and checkpoint.is_primary():
      checkpoint.write_json_atomic(self.dir / 'progress.json', self.data)

  def release(self) -> None:
    """Lets another run use the directory (at the end of :func:`run_job`)."""
    if self.lock is not None:
      self.lock.release()

  def discard(self) -> None:
    if self.dir is not None and checkpoint.is_primary():
      (self.dir / 'progress.json').unlink(missing_ok=True)
      shutil.rmtree(self.dir / 'checkpoints', ignore_errors=True)


class Monitor(Protocol):
  """What watches a method run: called ``monitor(updates, variables)`` every ``every``
  optimizer updates (the loops' callback); ``seconds`` it spent (left out of RTE) and
  ``report()``, the fields it adds to the method's row."""

  every: int
  seconds: float

  def __call__(self, updates: int, variables) -> None: ...

  def report(self) -> dict: ...


class SeedRun:
  """One seed of a job (a task subclasses it): ``task`` is what the methods run on (a
  dataclass with ``control``, ``callback`` and ``callback_every`` fields)."""

  task: Any
  # the cache key of the settings that made the original (``checkpoint.cached``'s
  # ``info['key']``); None for one given ready-made
  original_key: str | None = None

  def original(self) -> dict:
    """The row of the model before unlearning."""
    raise NotImplementedError

  def original_model(self) -> dict:
    """What identifies the original: ``key``, the cache key of the settings that made it,
    and ``fingerprint``, :func:`jaxunlearn.checkpoint.fingerprint` of its weights
    (``task.variables``). Two results of the same key and seed with other fingerprints
    started from different models: the code that trains it changed between them."""
    return {'key': self.original_key,
            'fingerprint': checkpoint.fingerprint(self.task.variables)}

  def given(self, name: str) -> dict | None:
    """The row of a method the job does not run (Retrain: trained with the seed); None."""
    return None

  def monitor(self, name: str, hp, original: dict) -> Monitor | None:
    """What watches method ``name``'s run (None: nothing)."""
    return None

  def score(self, name: str, variables) -> dict:
    """The row of metrics of ``variables``, what method ``name`` returned."""
    raise NotImplementedError


class Job:
  """A task's plug-in: ``config`` (``seeds``, ``methods``, ``max_nonfinite``,
  ``checkpoint_every``, ``progress``) and ``registry``, the task's methods."""

  config: Any
  registry: dict

  def hparams(self, progress: RunProgress) -> dict:
    """``{method: its hyperparameters}`` (classification may tune first, recorded in
    ``progress``)."""
    raise NotImplementedError

  def seed(self, seed: int) -> SeedRun:
    raise NotImplementedError

  def results(self, per_seed: dict, originals: list, hparams: dict) -> dict:
    """The results dict from the rows: ``{method: [row per seed]}`` and the original's."""
    raise NotImplementedError

  def write(self, results: dict, out_dir: Path) -> None:
    """results.json and the plots."""
    raise NotImplementedError


def run_method(method, run: SeedRun, name: str, hp, ckpt, max_nonfinite: int,
               original: dict) -> dict:
  """One method on one seed: its row (metrics, ``rte_s``, ``skipped_steps`` and what its
  monitor reports), or ``{'error', 'skipped_steps'}`` for a run that the non-finite guard
  stopped."""
  control = LoopControl(ckpt, max_nonfinite)
  monitor = run.monitor(name, hp, original)
  task = dataclasses.replace(run.task, control=control, callback=monitor,
                             callback_every=monitor.every if monitor else 0)
  control.start_clock()
  try:
    variables = method.run(task, hp)
  except NonFiniteError as e:
    return {'error': str(e), 'skipped_steps': control.skipped}
  seconds = control.elapsed() - control.overhead_seconds - (monitor.seconds if monitor else 0.0)
  return {**run.score(name, variables), 'rte_s': seconds, 'skipped_steps': control.skipped,
          **(monitor.report() if monitor else {})}


def run_job(job: Job, out_dir: str | Path | None = None, restart: bool = False) -> dict:
  """Runs every method of ``job.config.methods`` on every seed; returns the results dict
  and, with ``out_dir``, writes it with its plots (``job.write``).

  With ``out_dir`` the run is resumable (``config.checkpoint_every``): killed at any point
  and started again with the same configuration, it skips what it had finished, resumes
  the interrupted loop from its last checkpoint, and ends with the same numbers as a run
  never interrupted. ``restart=True`` discards an unfinished run in ``out_dir`` instead. A
  method that diverges on a seed gives a row with its error (``results['failures']``);
  the others go on.
  """
  progress = RunProgress(out_dir, job.config, restart)
  try:
    return _run_seeds(job, progress, out_dir)
  finally:
    progress.release()


def _run_seeds(job: Job, progress: RunProgress, out_dir) -> dict:
  config = job.config
  seeds, names = list(config.seeds), list(config.methods)
  if progress.resumed and config.progress:
    done = sum(len(v['methods']) for v in progress.data['seeds'].values())
    print(f'resuming the unfinished run in {out_dir} ({done} of {len(seeds) * len(names)} '
          'method runs done)')
  hparams = job.hparams(progress)
  for seed in seeds:
    done = progress.seed(seed)
    todo = [name for name in names if name not in done['methods']]
    if 'original' in done and not todo:
      continue
    run = job.seed(seed)
    if 'original' not in done:
      done['original'] = run.original()
      done['original_model'] = run.original_model()
      progress.save()
    for name in todo:
      row, ckpt = run.given(name), None
      if row is None:
        ckpt = progress.checkpoint(seed, name)
        row = run_method(job.registry[name], run, name, hparams[name], ckpt,
                         config.max_nonfinite, done['original'])
        if 'error' in row and config.progress:
          print(f'{name} failed on seed {seed}: {row["error"]}')
      done['methods'][name] = row
      progress.save()
      if ckpt is not None:  # its result is safely stored
        ckpt.remove()
  per_seed = {name: [progress.seed(seed)['methods'][name] for seed in seeds]
              for name in names}
  results = job.results(per_seed, [progress.seed(seed)['original'] for seed in seeds],
                        hparams)
  models = {str(seed): progress.seed(seed)['original_model'] for seed in seeds
            if 'original_model' in progress.seed(seed)}  # (not in a run begun before them)
  if models:
    results['original_models'] = models
  failures = {name: {str(seed): row['error'] for seed, row in zip(seeds, rows)
                     if 'error' in row} for name, rows in per_seed.items()}
  if any(failures.values()):
    results['failures'] = {k: v for k, v in failures.items() if v}
  results['provenance'] = provenance(config)
  if out_dir is not None and checkpoint.is_primary():
    job.write(results, Path(out_dir))
    progress.discard()
  return results
