"""The documentation: docstring examples run as doctests, and the Sphinx site (guides and
API reference, docs/conf.py) builds with no warning."""

import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxunlearn

ROOT = Path(__file__).resolve().parents[1]


def _modules_with_examples():
  names = []
  for info in pkgutil.walk_packages(jaxunlearn.__path__, 'jaxunlearn.'):
    path = ROOT / (info.name.replace('.', '/') + ('/__init__.py' if info.ispkg else '.py'))
    if path.exists() and '>>> ' in path.read_text():
      names.append(info.name)
  return names


MODULES = _modules_with_examples()


def test_the_public_transforms_have_examples():
  for name in ('jaxunlearn.transforms.combine', 'jaxunlearn.transforms.mask',
               'jaxunlearn.transforms.finite', 'jaxunlearn.transforms.multi_steps',
               'jaxunlearn.transforms.masking', 'jaxunlearn.transforms.train_state',
               'jaxunlearn.transforms.remain_geometry', 'jaxunlearn.saliency'):
    assert name in MODULES, f'{name} lost its docstring example'


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f'{name}: no example found'
  assert result.failed == 0, f'{name}: {result.failed} of {result.attempted} examples failed'


def test_sphinx_site_builds_without_warnings(tmp_path):
  """``sphinx-build -W`` (warnings are errors) of docs/: every guide, the API reference
  from the docstrings, the links between pages."""
  proc = subprocess.run([sys.executable, '-m', 'sphinx', '-E', '-W', '--keep-going', '-q',
                         '-b', 'html', '-d', str(tmp_path / 'doctrees'), str(ROOT / 'docs'),
                         str(tmp_path / 'html')], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  api = (tmp_path / 'html' / 'api.html').read_text()
  for name in ('combine_forget_retain', 'set_saliency_mask', 'salun_mask', 'LoopCheckpoint',
               'Parallel', 'TrainState', 'mia_efficacy'):
    assert name in api, f'{name} missing from the API reference'
