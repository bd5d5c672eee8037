"""Several real processes form one mesh (``jax.distributed`` over gloo on localhost, 4 fake
CPU devices each) and run methods under sharded jit: the unlearned variables equal one
process's with one device (and with 8 devices), to float32 rounding.

The processes are started by these tests (tests/multiprocess_worker.py), on a free port,
bounded in time and always reaped.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxunlearn.methods import get_method
from jaxunlearn.parallel import Parallel
from test_parallel import _hparams, _task

WORKER = Path(__file__).parent / 'multiprocess_worker.py'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(methods, out: Path, count: int = 2, local: int = 4, timeout: float = 600):
  """Starts ``count`` worker processes and waits for all; kills every one of them when one
  fails or the time is up. Returns the variables process 0 wrote."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(count), str(port),
                             str(local), str(out), *methods], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(count)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n{log[-4000:]}'
  with np.load(out) as f:
    return dict(f)


def _flat(name, variables):
  return {f'{name}{jax.tree_util.keystr(path)}': np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}


@pytest.fixture(scope='module')
def task():
  return _task()


@pytest.mark.slow
def test_salun_over_two_processes_equals_one_device(task, tmp_path):
  got = run_processes(['salun'], tmp_path / 'out.npz')
  want = _flat('salun', get_method('salun').run(task, _hparams('salun')))
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-5, err_msg=k)
