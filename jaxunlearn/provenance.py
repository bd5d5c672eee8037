"""What made a result: recorded in every ``results.json`` under ``provenance``.

A number without the code, versions, machine and configuration that produced it cannot be
checked or reproduced. :func:`provenance` collects them when a run writes its results:

- ``jaxunlearn``: the package version; ``git``: the commit of the checkout the package was
  imported from and whether tracked files differed from it (``None`` for an installed
  wheel, which carries no repository);
- ``packages``: the versions of jax, jaxlib, flax, optax, orbax-checkpoint and numpy;
- ``python``, ``platform``; ``backend``, ``devices`` (count, kind, processes);
- ``command``: the command line of the process (``jaxunlearn run ...`` or the script), and
  ``argv``, its arguments as a list (what ``experiments/reproduce.py --check`` re-resolves);
- ``config``: the run's full resolved configuration (every field of its config
  dataclass, defaults included); the resolved hyperparameters of each method are in the
  results' own ``hparams``;
- ``environment``: the variables that change what runs (``JAXUNLEARN_*`` but the cache's
  path, ``XLA_FLAGS``), those set;
- ``finished``: the UTC time the results were written.

Comparisons between runs (resumed against uninterrupted, one device against eight) leave
``provenance`` out: it differs by design.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from jaxunlearn import __version__

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def package_versions(names=PACKAGES) -> dict:
  """``{distribution: version}``; ``None`` for one not installed."""
  out = {}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


# what a run writes or shows, not what makes its numbers: a change there leaves the code clean
_NOT_CODE = ('experiments/results', 'docs', 'README.md')


def git_state(path: str | Path | None = None) -> dict | None:
  """``{'commit', 'dirty'}`` of the git checkout holding ``path`` (default: this package),
  or ``None`` where there is none (an installed wheel) or git is missing. ``dirty``: a
  tracked file differs from the commit, other than stored results and the docs
  (:data:`_NOT_CODE`; re-measuring one result after another in a checkout rewrites those)."""
  where = Path(path) if path is not None else Path(__file__).resolve().parent
  def git(*args):
    return subprocess.run(['git', '-C', str(where), *args], capture_output=True, text=True,
                          timeout=20)
  try:
    head = git('rev-parse', 'HEAD')
    if head.returncode != 0:
      return None
    status = git('status', '--porcelain', '--untracked-files=no', '--', ':(top)',
                 *(f':(top,exclude){p}' for p in _NOT_CODE))
  except (OSError, subprocess.SubprocessError):
    return None
  return {'commit': head.stdout.strip(),
          'dirty': status.returncode != 0 or bool(status.stdout.strip())}


# where files go, not what runs
_NOT_RECORDED = ('JAXUNLEARN_CACHE',)


def environment() -> dict:
  """The environment variables that change a run: ``JAXUNLEARN_*`` (the CPU convolution
  lowering, ...) but the cache's path, and ``XLA_FLAGS``."""
  return {k: v for k, v in sorted(os.environ.items())
          if (k.startswith('JAXUNLEARN_') and k not in _NOT_RECORDED) or k == 'XLA_FLAGS'}


def _jsonable(value):
  return json.loads(json.dumps(value, default=str))


def provenance(config=None) -> dict:
  """The ``provenance`` record of a result made now with ``config`` (a config dataclass or
  a dict; ``None`` records none)."""
  import jax
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    config = dataclasses.asdict(config)
  devices = jax.devices()
  return {
      'jaxunlearn': __version__,
      'git': git_state(),
      'packages': package_versions(),
      'python': platform.python_version(),
      'platform': platform.platform(),
      'backend': jax.default_backend(),
      'devices': {'count': len(devices), 'kind': devices[0].device_kind,
                  'processes': jax.process_count()},
      'command': ' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
      'argv': list(sys.argv[1:]),
      'config': None if config is None else _jsonable(config),
      'environment': environment(),
      'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
