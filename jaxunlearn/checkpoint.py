"""Orbax checkpoints: of flax variables, of running loops (resume), and the model cache.

- :class:`LoopCheckpoint`: periodic checkpoints of a training or unlearning loop, which
  restarts where the last one left off (:class:`jaxunlearn.train.LoopControl`).
- :func:`cached`: trained originals and Retrains are expensive and deterministic, so they
  are cached under ``cache_dir/<kind>-<hash>/`` where the hash covers their full
  configuration (dataset, image size, model, width, training recipe, seed, and for Retrain
  the scenario).

Every write is atomic. Orbax writes a checkpoint into a temporary directory and renames it
when complete; JSON files go through :func:`write_json_atomic` (a temporary file, fsync,
``os.replace``). A process killed in the middle of a save leaves the previous checkpoint as
it was, and never a half-written one that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

CACHE_VERSION = 2  # Bump when training code changes in a way that changes results.
# 2: ResNet convolutions padded as PyTorch's (stride-2 3x3: (1, 1), not XLA SAME's (0, 1)).


def default_cache_dir() -> Path:
  root = os.environ.get('JAXUNLEARN_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'jaxunlearn')
  return Path(root)


class CheckpointError(RuntimeError):
  """No checkpoint in a directory can be restored; the message says how to recover."""


def write_json_atomic(path: str | os.PathLike, obj) -> None:
  """Writes ``obj`` as JSON to ``path`` so that a reader sees the old file or the new one,
  never a truncated one (temporary file in the same directory, fsync, ``os.replace``)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  try:
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)  # a failed write (full disk) leaves nothing half-written


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
  """``fig.savefig`` through a temporary file and a rename: a full disk leaves the old plot
  or none, never a 0-byte or truncated one."""
  path = Path(path)
  tmp = path.with_name(f'.{path.stem}.tmp-{os.getpid()}{path.suffix}')
  try:
    fig.savefig(tmp, format=path.suffix.lstrip('.') or 'png', **savefig_kwargs)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


class FileLock:
  """An exclusive lock on ``path`` held by this process (``fcntl.flock``; released when the
  process ends, however it ends), used so that two runs never write one output directory
  or train one cache entry at once. A no-op where ``fcntl`` is missing (Windows).

  ``acquire(wait=False)`` raises :class:`LockedError` naming the holder's pid;
  ``acquire(wait=True)`` says whom it waits for (``notice``) and blocks until it is free.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._file = None

  def holder(self) -> str:
    try:
      return self.path.read_text().strip() or 'unknown'
    except OSError:
      return 'unknown'

  def acquire(self, wait: bool = False, notice: Callable[[str], None] | None = None):
    try:
      import fcntl
    except ImportError:  # no advisory locks here
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    f = open(self.path, 'a+')
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not wait:
        f.close()
        raise LockedError(self.path, self.holder()) from None
      if notice is not None:
        notice(self.holder())
      fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(f'{os.getpid()}\n')
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is not None:
      import fcntl
      self._file.seek(0)
      self._file.truncate()
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


class LockedError(ValueError):
  """Another process holds a :class:`FileLock`."""

  def __init__(self, path: Path, holder: str):
    super().__init__(f'{path.parent} is in use by another jaxunlearn process (pid {holder}, '
                     f'lock {path.name}): wait for it to finish, or choose another --out')


MIN_FREE_BYTES = 100 * 2**20  # an output directory needs at least this much free space


def check_output_dir(path: str | os.PathLike, min_free: int = MIN_FREE_BYTES) -> Path:
  """Makes ``path`` (a directory, with its parents) and checks that a file can be written
  there and that ``min_free`` bytes are free, before any compute; raises ValueError naming
  the directory and what is wrong (``--out`` is a file, read-only, full ...)."""
  path = Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except FileExistsError:
    raise ValueError(f'--out {path}: a file of that name is in the way; give a directory '
                     'path') from None
  except OSError as e:
    raise ValueError(f'--out {path}: cannot create that directory ({e.strerror or e}); give '
                     'a writable location') from None
  probe = path / f'.write-test-{os.getpid()}'
  try:
    probe.write_bytes(b'0')
  except OSError as e:
    raise ValueError(f'--out {path}: cannot write there ({e.strerror or e}); give a writable '
                     'location') from None
  finally:
    probe.unlink(missing_ok=True)
  free = shutil.disk_usage(path).free
  if free < min_free:
    raise ValueError(f'--out {path}: only {free / 2**20:.0f} MiB free there, less than the '
                     f'{min_free / 2**20:.0f} MiB a run needs for its results and checkpoints: '
                     'free some space or choose another location')
  return path


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


class LoopCheckpoint:
  """Periodic orbax checkpoints of one loop, and the way back into it after a kill.

  A checkpoint at update ``n`` holds the loop's whole :class:`jaxunlearn.step.TrainState`
  (params, BatchNorm statistics, optimizer state with its saliency masks and schedule
  counts, the step that per-step PRNG keys fold in, the non-finite counters) and a JSON
  record: ``n`` itself (the data iterator's position: batches are a pure function of the
  seed and the pass, so replaying the first ``n`` batch draws puts it back), the losses
  so far, the callback's state and the seconds spent. Restarted from it, a loop takes the
  same steps as one never interrupted, so it ends bit-identical on CPU.

  Args:
    directory: where the steps go (one subdirectory per checkpoint).
    every: save after every this many updates.
    keep: how many of the newest checkpoints to keep (>= 2, so that a damaged newest one
      has a previous one to fall back to).
  """

  def __init__(self, directory: str | os.PathLike, every: int = 50, keep: int = 2):
    if every < 1:
      raise ValueError(f'checkpoint every must be >= 1 update, got {every}')
    if keep < 2:
      raise ValueError(f'keep at least 2 checkpoints (a damaged newest one falls back to the '
                       f'previous one), got {keep}')
    self.directory = Path(directory).absolute()
    self.every = every
    self.keep = keep
    self.prior_seconds = 0.0  # set by restore(): the seconds its record says were spent
    self._manager = None

  def _open(self):
    import orbax.checkpoint as ocp
    if self._manager is None:
      if is_primary():  # (orbax's create=True is refused with active_processes)
        self.directory.mkdir(parents=True, exist_ok=True)
      self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
          max_to_keep=self.keep, create=False, enable_async_checkpointing=False,
          cleanup_tmp_directories=is_primary(), multiprocessing_options=_this_process()))
    return self._manager

  def steps(self) -> list[int]:
    """The updates at which complete checkpoints exist, oldest first."""
    if not self.directory.is_dir():
      return []
    return sorted(self._open().all_steps())

  def save(self, updates: int, state, record: dict) -> None:
    """Saves ``state`` (a host pytree) and ``record`` (JSON) as the checkpoint at ``updates``."""
    import orbax.checkpoint as ocp
    if not is_primary():  # process 0 writes the host copy every process holds
      return
    manager = self._open()
    manager.save(updates, args=ocp.args.Composite(
        state=ocp.args.StandardSave(jax.device_get(state)),
        record=ocp.args.JsonSave({**record, 'updates': updates})), force=True)
    manager.wait_until_finished()

  def restore(self, like):
    """The newest checkpoint that reads back, as ``(updates, state, record)`` with ``state``
    shaped like ``like``; None if there is none.

    A damaged checkpoint (a truncated or missing file) is skipped, and the previous one is
    used; the damaged one is moved aside to ``<directory>.damaged-<step>`` (named in a
    warning), so that the resumed loop saves that step anew instead of colliding with it.

    Raises:
      CheckpointError: checkpoints exist but none can be read; says what to delete.
    """
    if is_primary():
      found = self._restore(like)
      sync(f'restored {self.directory}')
      return found
    sync(f'restored {self.directory}')  # after process 0 moved damaged steps aside
    return self._restore(like)

  def _restore(self, like):
    import orbax.checkpoint as ocp
    steps = self.steps()
    errors, damaged = [], []
    for step in reversed(steps):
      path = self.directory / str(step)
      try:
        out = self._open().restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like)), record=ocp.args.JsonRestore()))
        leaves = jax.tree.leaves(out.state)
        if len(leaves) != len(jax.tree.leaves(like)) or out.record.get('updates') != step:
          raise ValueError('its contents do not match this loop (another model or optimizer?)')
        state = jax.tree.unflatten(jax.tree.structure(like), [np.asarray(x) for x in leaves])
        self.prior_seconds = float(out.record.get('seconds', 0.0))
        self._move_aside(damaged, step)
        return step, state, dict(out.record)
      except Exception as e:  # orbax and tensorstore raise many types for damaged files
        errors.append(f'{path}: {type(e).__name__}: {str(e)[:300]}')
        damaged.append((step, f'{type(e).__name__}: {str(e)[:300]}'))
    if errors:
      raise CheckpointError(
          f'no checkpoint in {self.directory} can be read:\n  ' + '\n  '.join(errors) +
          f'\nDelete {self.directory} to run this loop again from its start (it repeats the '
          'same steps, so the result is the same).')
    return None

  def _move_aside(self, damaged: list, restored: int) -> None:
    """Moves the damaged checkpoints newer than ``restored`` out of the directory, each
    with a warning saying where (the loop will save those steps again)."""
    if not damaged or not is_primary():
      return
    if self._manager is not None:
      self._manager.close()
      self._manager = None
    for step, why in damaged:
      target = self.directory.with_name(f'{self.directory.name}.damaged-{step}')
      n = 1
      while target.exists():
        n += 1
        target = self.directory.with_name(f'{self.directory.name}.damaged-{step}-{n}')
      os.replace(self.directory / str(step), target)
      warnings.warn(f'checkpoint {self.directory / str(step)} cannot be read ({why}); moved '
                    f'to {target} (delete it once you no longer need it) and resuming from '
                    f'the previous one, step {restored}', stacklevel=3)

  def remove(self) -> None:
    """Deletes the directory (once the loop's result is safely stored elsewhere)."""
    if self._manager is not None:
      self._manager.close()
      self._manager = None
    if is_primary():
      shutil.rmtree(self.directory, ignore_errors=True)


def is_primary() -> bool:
  """Whether this process writes the run's files: always in a single-process run, process 0
  of several (``jaxunlearn.parallel.initialize_distributed``). The others compute the same
  host values (``Parallel.get`` gives the same copy everywhere) and write nothing."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process of a multi-process run has reached ``name`` (nothing to do
  in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f'jaxunlearn:{name}')


def _this_process():
  """orbax options under which a checkpointer reads and writes on its own: our host copies
  are the same in every process, so one writes and each reads without a barrier."""
  import orbax.checkpoint as ocp
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def save_variables(path: str | os.PathLike, variables) -> None:
  """Saves a pytree of arrays with orbax (atomically: temp dir, then rename)."""
  import orbax.checkpoint as ocp
  path = Path(path).absolute()
  if not is_primary():  # process 0 writes what every process holds
    return
  with ocp.StandardCheckpointer(multiprocessing_options=_this_process()) as ckptr:
    ckptr.save(path, jax.device_get(variables), force=True)
    ckptr.wait_until_finished()


def load_variables(path: str | os.PathLike, like=None):
  """Restores a pytree saved by :func:`save_variables` as numpy arrays.

  Raises:
    FileNotFoundError: no checkpoint at ``path``, or an incomplete one, with what to do.
  """
  import orbax.checkpoint as ocp
  path = Path(path).absolute()
  if not path.is_dir():
    raise FileNotFoundError(f'no checkpoint at {path}: train it first, or check the path')
  target = None if like is None else _abstract(like)
  try:
    with ocp.StandardCheckpointer(multiprocessing_options=_this_process()) as ckptr:
      restored = ckptr.restore(path, target)
  except Exception as e:  # orbax raises various types for damaged checkpoints
    raise FileNotFoundError(
        f'checkpoint at {path} could not be read ({type(e).__name__}: {e}); it is damaged or '
        'incomplete: delete that directory and run again to recompute it') from e
  return jax.tree.map(np.asarray, restored)


def config_hash(config: dict) -> str:
  """Stable short hash of a JSON-serialisable config (key order does not matter)."""
  blob = json.dumps({'version': CACHE_VERSION, **config}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fingerprint(variables) -> str:
  """A short hash of a pytree of arrays: the names, dtypes and shapes of its leaves and every
  byte of every value. Two models with the same fingerprint hold the same numbers; one bit
  changed in one weight changes it. A job records its originals' (``original_models`` in
  ``results.json``), so that two results made with the same settings show whether they
  started from the same model."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0]:
    # the key names only: a dict and a FrozenDict of the same arrays agree
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                    for k in path)
    value = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
    h.update(value.tobytes())
  return h.hexdigest()[:16]


def cached(cache_dir: str | os.PathLike | None, kind: str, config: dict,
           compute: Callable[..., Any], like=None, checkpoint_every: int = 0):
  """Returns ``(variables, info)``: loaded from the cache, or computed and stored there.

  ``info`` is ``{'hit': bool, 'seconds': float, 'key': str}``, ``seconds`` being the wall
  time of the original computation (recorded in the entry, so a cache hit still reports
  it), ``key`` the entry's name, ``KIND-HASH`` of ``config`` (with or without a cache).
  ``cache_dir=None`` disables caching. The config is written beside the checkpoint as
  ``config.json`` so that a cache entry says what it holds.

  With ``checkpoint_every > 0`` the computation is resumable: ``compute(loop_checkpoint)``
  gets a :class:`LoopCheckpoint` in the entry's ``partial/`` directory (None without a
  cache), so a computation killed midway resumes there; otherwise ``compute()``.
  """
  key = f'{kind}-{config_hash(config)}'
  entry = None if cache_dir is None else Path(cache_dir) / key
  lock = None  # (without a cache, or on the other processes: they compute with process 0)
  if entry is not None and is_primary():
    # One process trains an entry; another that needs it waits, then loads what it wrote.
    lock = FileLock(entry.parent / '.locks' / f'{entry.name}.lock').acquire(
        wait=True, notice=lambda pid: print(f'waiting for process {pid}, which is computing '
                                            f'the same {kind} ({entry})', file=sys.stderr))
  try:
    variables, info = _cached(entry, kind, config, compute, like, checkpoint_every)
  finally:
    if lock is not None:
      lock.release()
  return variables, {**info, 'key': key}


def _cached(entry, kind, config, compute, like, checkpoint_every):
  # Every process decides alike: they all look before any of them computes (a
  # multi-process computation needs all of them) and only process 0 writes, at the end.
  hit = entry is not None and (entry / 'meta.json').is_file()
  sync(f'looked up {entry}')
  if hit:
    try:
      variables = load_variables(entry / 'variables', like)
      return variables, {'hit': True, **json.loads((entry / 'meta.json').read_text())}
    except (FileNotFoundError, ValueError):
      print(f'notice: the cached {kind} in {entry} cannot be read (damaged?); computing it '
            'again', file=sys.stderr)  # and overwriting it below
  partial = None
  if checkpoint_every > 0 and entry is not None:
    partial = LoopCheckpoint(entry / 'partial', checkpoint_every)
  start = time.perf_counter()
  variables = jax.block_until_ready(compute(partial) if checkpoint_every > 0 else compute())
  info = {'hit': False, 'seconds': time.perf_counter() - start +
          (partial.prior_seconds if partial is not None else 0.0)}
  if entry is not None and is_primary():
    entry.mkdir(parents=True, exist_ok=True)
    (entry / 'config.json').write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
    save_variables(entry / 'variables', variables)
    # Written last: an entry without meta.json (a save cut short) is never loaded.
    write_json_atomic(entry / 'meta.json', {'seconds': info['seconds']})
    if partial is not None:
      partial.remove()
  return variables, info
