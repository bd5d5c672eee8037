"""Orbax checkpoints of flax variables, and the on-disk cache of trained models.

Trained originals and Retrains are expensive and deterministic, so they are cached under
``cache_dir/<kind>-<hash>/`` where the hash covers their full configuration (dataset,
image size, model, width, training recipe, seed, and for Retrain the scenario). Orbax writes
to a temporary directory and renames it when complete, so an interrupted save never leaves a
half-written entry that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

CACHE_VERSION = 1  # Bump when training code changes in a way that changes results.


def default_cache_dir() -> Path:
  root = os.environ.get('JAXUNLEARN_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'jaxunlearn')
  return Path(root)


def save_variables(path: str | os.PathLike, variables) -> None:
  """Saves a pytree of arrays with orbax (atomically: temp dir, then rename)."""
  import orbax.checkpoint as ocp
  path = Path(path).absolute()
  with ocp.StandardCheckpointer() as ckptr:
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
  target = None if like is None else jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), like)
  try:
    with ocp.StandardCheckpointer() as ckptr:
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


def cached(cache_dir: str | os.PathLike | None, kind: str, config: dict,
           compute: Callable[[], Any], like=None):
  """Returns ``(variables, info)``: loaded from the cache, or computed and stored there.

  ``info`` is ``{'hit': bool, 'seconds': float}``, ``seconds`` being the wall time of the
  original computation (recorded in the entry, so a cache hit still reports it).
  ``cache_dir=None`` disables caching. The config is written beside the checkpoint as
  ``config.json`` so that a cache entry says what it holds.
  """
  entry = None if cache_dir is None else Path(cache_dir) / f'{kind}-{config_hash(config)}'
  if entry is not None and (entry / 'meta.json').is_file():
    try:
      variables = load_variables(entry / 'variables', like)
      return variables, {'hit': True, **json.loads((entry / 'meta.json').read_text())}
    except (FileNotFoundError, ValueError):
      pass  # damaged entry: recompute and overwrite below
  start = time.perf_counter()
  variables = jax.block_until_ready(compute())
  info = {'hit': False, 'seconds': time.perf_counter() - start}
  if entry is not None:
    entry.mkdir(parents=True, exist_ok=True)
    (entry / 'config.json').write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
    save_variables(entry / 'variables', variables)
    # Written last: an entry without meta.json (a save cut short) is never loaded.
    (entry / 'meta.json').write_text(json.dumps({'seconds': info['seconds']}))
  return variables, info
