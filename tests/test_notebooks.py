"""Every Colab notebook runs top to bottom, headless, in its small setting."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / 'colab').glob('*.ipynb'))


def test_the_three_notebooks_exist():
  assert {p.name for p in NOTEBOOKS} >= {'quickstart.ipynb', 'classification.ipynb',
                                         'diffusion.ipynb'}


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_without_error(path, tmp_path, monkeypatch):
  nbclient = pytest.importorskip('nbclient')
  import nbformat
  monkeypatch.setenv('JAXUNLEARN_SMALL', '1')
  monkeypatch.setenv('XLA_FLAGS', '')  # the kernel sees one CPU device, as a CPU Colab does
  monkeypatch.setenv('JAXUNLEARN_CACHE', str(tmp_path / 'cache'))
  notebook = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  errors = [o for cell in notebook.cells if cell.cell_type == 'code'
            for o in cell.get('outputs', []) if o.get('output_type') == 'error']
  assert not errors
  images = [o for cell in notebook.cells if cell.cell_type == 'code'
            for o in cell.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert images, 'every notebook shows at least one plot'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_asks_for_a_source_and_installs_from_it(path, monkeypatch):
  """On a machine without jaxunlearn the install cell stops with what to set (it names no
  repository address of its own), and with ``JAXUNLEARN_SOURCE`` it pip-installs that."""
  import importlib.util
  import json
  import subprocess
  cell = next(''.join(c['source']) for c in json.loads(path.read_text())['cells']
              if 'JAXUNLEARN_SOURCE' in ''.join(c['source']))
  assert 'github.com' not in cell
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  calls = []
  monkeypatch.setattr(subprocess, 'check_call', lambda cmd: calls.append(cmd))
  monkeypatch.delenv('JAXUNLEARN_SOURCE', raising=False)
  with pytest.raises(SystemExit, match='set SOURCE in this cell'):
    exec(cell, {})
  monkeypatch.setenv('JAXUNLEARN_SOURCE', '/content/jaxunlearn')
  exec(cell, {})
  assert calls and calls[0][-1] == '/content/jaxunlearn'
