import json

import jax
import numpy as np
import pytest

from jaxunlearn.checkpoint import cached, config_hash, load_variables, save_variables


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
