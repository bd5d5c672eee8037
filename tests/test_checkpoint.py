import json
import os
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxunlearn.checkpoint import (cached, config_hash, fingerprint, load_variables,
                                   save_variables, write_json_atomic)


def _tree():
  return {'params': {'w': np.arange(6, dtype=np.float32).reshape(2, 3)},
          'batch_stats': {'mean': np.ones(3, np.float32)}}


def test_roundtrip(tmp_path):
  save_variables(tmp_path / 'ck', _tree())
  out = load_variables(tmp_path / 'ck', like=_tree())
  jax.tree.map(np.testing.assert_array_equal, out, _tree())


def test_missing_checkpoint_error_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    load_variables(tmp_path / 'nothing')


def test_config_hash_ignores_key_order():
  assert config_hash({'a': 1, 'b': 2}) == config_hash({'b': 2, 'a': 1})
  assert config_hash({'a': 1}) != config_hash({'a': 2})


def test_cache_hits_and_recomputes_damaged_entries(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return _tree()

  out, info = cached(tmp_path, 'orig', {'seed': 0}, compute, like=_tree())
  assert not info['hit'] and info['seconds'] >= 0
  out, info2 = cached(tmp_path, 'orig', {'seed': 0}, compute, like=_tree())
  assert info2['hit'] and info2['seconds'] == pytest.approx(info['seconds'])
  assert len(calls) == 1
  jax.tree.map(np.testing.assert_array_equal, out, _tree())
  entry = next(tmp_path.glob('orig-*'))
  assert json.loads((entry / 'config.json').read_text()) == {'seed': 0}
  # A different config is a different entry.
  cached(tmp_path, 'orig', {'seed': 1}, compute, like=_tree())
  assert len(calls) == 2
  # Damage the stored arrays: the entry is recomputed, not loaded.
  for f in (entry / 'variables').rglob('*'):
    if f.is_file() and f.name != 'meta.json':
      f.write_bytes(b'garbage')
  out, info3 = cached(tmp_path, 'orig', {'seed': 0}, compute, like=_tree())
  assert not info3['hit'] and len(calls) == 3
  jax.tree.map(np.testing.assert_array_equal, out, _tree())
  # An entry whose save never finished (no meta.json) is not trusted either.
  (entry / 'meta.json').unlink()
  cached(tmp_path, 'orig', {'seed': 0}, compute, like=_tree())
  assert len(calls) == 4


def test_cache_disabled(tmp_path):
  out, info = cached(None, 'orig', {}, _tree)
  assert not info['hit']
  # the key is the settings' (what a result records of its original), cache or none
  assert info['key'] == f"orig-{config_hash({})}" == cached(tmp_path, 'orig', {}, _tree)[1]['key']


def test_fingerprint_changes_with_any_bit_of_any_weight_and_nothing_else():
  from flax.core import freeze
  tree = {'dense': {'kernel': np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
                    'bias': np.zeros(4, np.float32)}}
  fp = fingerprint(tree)
  assert len(fp) == 16 and fp == fingerprint(jax.tree.map(np.copy, tree))
  assert fingerprint(freeze(tree)) == fp  # a FrozenDict of the same arrays
  assert fingerprint(jax.tree.map(jax.numpy.asarray, tree)) == fp  # on a device
  bumped = jax.tree.map(np.copy, tree)
  bumped['dense']['kernel'][1, 2] = np.nextafter(bumped['dense']['kernel'][1, 2], 2)
  assert fingerprint(bumped) != fp  # one ulp of one weight
  assert fingerprint({'dense': {'kernel': tree['dense']['kernel'],
                                'b': tree['dense']['bias']}}) != fp  # another name
  assert fingerprint(jax.tree.map(lambda a: a.astype(np.float64), tree)) != fp  # dtype
  assert fingerprint({'dense': {'kernel': tree['dense']['kernel'].reshape(4, 3),
                                'bias': tree['dense']['bias']}}) != fp  # shape


def test_output_dir_is_checked_before_compute(tmp_path, capsys):
  from jaxunlearn.checkpoint import check_output_dir
  from jaxunlearn.cli import main
  blocker = tmp_path / 'afile'
  blocker.write_text('x')
  for out, message in [(blocker, 'a file of that name is in the way'),
                       (blocker / 'sub', 'cannot create that directory')]:
    with pytest.raises(ValueError, match=message):
      check_output_dir(out)
    start = time.perf_counter()
    assert main(['run', '--quiet', '--no-cache', '--out', str(out)]) == 2
    assert time.perf_counter() - start < 5
    assert message in capsys.readouterr().err
  with pytest.raises(ValueError, match='MiB free there'):
    check_output_dir(tmp_path / 'ok', min_free=2**62)
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match='cannot write there'):
      check_output_dir(locked)


def test_a_full_disk_leaves_the_old_file_or_none(tmp_path, monkeypatch):
  """ENOSPC in the middle of a write: results.json and the plot keep their old contents
  and no temporary file is left behind."""
  import errno
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from jaxunlearn import checkpoint
  write_json_atomic(tmp_path / 'results.json', {'old': 1})
  fig = plt.figure()
  checkpoint.save_figure(fig, tmp_path / 'results.png')
  old_png = (tmp_path / 'results.png').read_bytes()

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(checkpoint.os, 'fsync', full)
  with pytest.raises(OSError):
    write_json_atomic(tmp_path / 'results.json', {'new': 2})
  monkeypatch.setattr(fig, 'savefig', lambda path, **kw: (Path(path).write_bytes(b''),
                                                           full()))
  with pytest.raises(OSError):
    checkpoint.save_figure(fig, tmp_path / 'results.png')
  plt.close(fig)
  assert json.loads((tmp_path / 'results.json').read_text()) == {'old': 1}
  assert (tmp_path / 'results.png').read_bytes() == old_png and len(old_png) > 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json', 'results.png']


def test_two_runs_never_share_an_output_directory(tmp_path):
  """A second run into a directory another holds stops before any compute, naming the
  holder's pid; once the first ends, the directory is free again."""
  import dataclasses
  from jaxunlearn.checkpoint import FileLock, LockedError
  from jaxunlearn.job import RunProgress

  @dataclasses.dataclass
  class Config:
    checkpoint_every: int = 0
    seeds: tuple = (0,)
  first = RunProgress(tmp_path / 'out', Config())
  with pytest.raises(LockedError, match=rf'in use by another jaxunlearn process \(pid '
                                        rf'{os.getpid()}'):
    RunProgress(tmp_path / 'out', Config())
  first.release()
  RunProgress(tmp_path / 'out', Config()).release()
  with FileLock(tmp_path / 'x.lock').acquire():
    with pytest.raises(LockedError):
      FileLock(tmp_path / 'x.lock').acquire()
  FileLock(tmp_path / 'x.lock').acquire().release()


def test_two_runs_needing_one_cache_entry_compute_it_once(tmp_path, capsys):
  """Two threads (each with its own lock file handle, as two processes) ask for the same
  uncached entry: one computes, the other waits and loads what it stored."""
  import threading
  calls = []

  def compute():
    calls.append(1)
    time.sleep(1.5)
    return {'w': np.arange(3.0)}

  out = {}
  first = threading.Thread(target=lambda: out.setdefault(
      'a', cached(tmp_path, 'original', {'seed': 0}, compute)))
  first.start()
  time.sleep(0.5)
  out['b'] = cached(tmp_path, 'original', {'seed': 0}, compute)
  first.join()
  assert len(calls) == 1
  assert out['a'][1]['hit'] is False and out['b'][1]['hit'] is True
  np.testing.assert_array_equal(out['b'][0]['w'], np.arange(3.0))
  assert 'waiting for process' in capsys.readouterr().err
