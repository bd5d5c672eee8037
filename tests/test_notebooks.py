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
