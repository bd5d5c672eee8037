"""Every Colab notebook runs top to bottom, headless, in its small setting."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / 'colab').glob('*.ipynb'))


def test_the_notebooks_exist():
  assert {p.name for p in NOTEBOOKS} >= {'quickstart.ipynb', 'classification.ipynb',
                                         'diffusion.ipynb', 'stable_diffusion.ipynb'}


def _execute(path, tmp_path):
  """Runs notebook ``path`` headless in a kernel (cwd ``tmp_path``); no cell may fail."""
  import nbclient
  import nbformat
  notebook = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  errors = [o for cell in notebook.cells if cell.cell_type == 'code'
            for o in cell.get('outputs', []) if o.get('output_type') == 'error']
  assert not errors
  return notebook


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_without_error(path, tmp_path, monkeypatch):
  pytest.importorskip('nbclient')
  monkeypatch.setenv('JAXUNLEARN_SMALL', '1')
  monkeypatch.setenv('XLA_FLAGS', '')  # the kernel sees one CPU device, as a CPU Colab does
  monkeypatch.setenv('JAXUNLEARN_CACHE', str(tmp_path / 'cache'))
  notebook = _execute(path, tmp_path)
  images = [o for cell in notebook.cells if cell.cell_type == 'code'
            for o in cell.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert images, 'every notebook shows at least one plot'


@pytest.mark.slow
def test_stable_diffusion_notebook_erases_with_a_folder(tmp_path, monkeypatch):
  """The Stable Diffusion branch of ``stable_diffusion.ipynb`` (what a GPU/TPU user with a
  folder runs), on a tiny random-weight folder at tiny sizes: convert, erase, grids."""
  pytest.importorskip('nbclient')
  from tests.test_prompt_sets import tiny_sd_checkpoint
  tiny_sd_checkpoint(tmp_path / 'model')
  monkeypatch.setenv('JAXUNLEARN_SMALL', '1')
  monkeypatch.setenv('XLA_FLAGS', '')
  for name, value in (('SD_FOLDER', tmp_path / 'model' / 'sd'), ('SD_IMAGE_SIZE', 16),
                      ('SD_STEPS', 2), ('SD_IMAGES', 2), ('SD_SHOW', 2),
                      ('SD_CONCEPT', 'prompt:a three|three three')):
    monkeypatch.setenv(name, str(value))
  notebook = _execute(Path(__file__).parent.parent / 'colab' / 'stable_diffusion.ipynb',
                      tmp_path)
  text = ''.join(o.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                 for o in cell.get('outputs', []))
  assert 'salun: 2 forget / 2 retain images' in text
  assert (tmp_path / 'sd-flax' / 'config.json').is_file()
  assert any('image/png' in o.get('data', {}) for cell in notebook.cells
             if cell.cell_type == 'code' for o in cell.get('outputs', []))


def _run_full_cells_on_tfds_mock(name, tmp_path, monkeypatch, examples, **env):
  """Runs notebook ``name``'s code cells as they are, in this process (where TFDS's mock
  data lives), in its full setting at toy sizes (``JAXUNLEARN_TINY``), TFDS datasets
  replaced by ``examples`` random examples per split, ``env`` set."""
  import json
  tfds = pytest.importorskip('tensorflow_datasets')
  env = {'JAXUNLEARN_TINY': '1', 'DATA_DIR': tmp_path / 'tfds',
         'JAXUNLEARN_CACHE': tmp_path / 'cache', **env}
  for key, value in env.items():
    monkeypatch.setenv(key, str(value))
  (tmp_path / 'tfds').mkdir()
  monkeypatch.chdir(tmp_path)
  cells = [''.join(c['source']) for c in json.loads(
      (Path(__file__).parent.parent / 'colab' / name).read_text())['cells']
           if c['cell_type'] == 'code']
  namespace = {}
  with tfds.testing.mock_data(num_examples=examples):
    for source in cells:
      exec(compile(source, name, 'exec'), namespace)


@pytest.mark.slow
def test_classification_notebook_full_cells_read_tfds_and_your_checkpoint(tmp_path,
                                                                          monkeypatch):
  """The accelerator branch of ``classification.ipynb`` at toy sizes on a CPU: CIFAR-10
  through TFDS (its mock data), the papers' settings shrunk, started from a user's orbax
  checkpoint and a user's forget indices; the cells run as they are, in this process
  (TFDS's mock lives here)."""
  import json

  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxunlearn.checkpoint import save_variables
  from jaxunlearn.models import make_model
  model = make_model('resnet18', 10, width=8)
  save_variables(tmp_path / 'mine', model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                               train=False))
  np.save(tmp_path / 'forget.npy', np.arange(0, 48, 8))
  _run_full_cells_on_tfds_mock('classification.ipynb', tmp_path, monkeypatch, 48,
                               ORIGINAL=tmp_path / 'mine', ALLOW_DUPLICATES='1',
                               FORGET_INDICES=tmp_path / 'forget.npy')
  results = json.loads((tmp_path / 'results_classification' / 'results.json').read_text())
  assert results['dataset'] == 'cifar10' and results['scenario'].startswith('indices:')
  assert set(results['methods']) == {'retrain', 'salun', 'sfron', 'lur'}
  assert results['model']['original']['path'] == str(tmp_path / 'mine')
  assert results['hparams']['salun']['lr'] == 0.013      # the paper's value, kept
  assert results['hparams']['salun']['epochs'] == 1      # the toy size


@pytest.mark.slow
def test_diffusion_notebook_full_cells_read_tfds_and_your_ddpm(tmp_path, monkeypatch):
  """The accelerator branch of ``diffusion.ipynb`` at toy sizes on a CPU: CIFAR-10 through
  TFDS's mock data, the papers' DDPM setting shrunk, the original a user's diffusers
  ``UNet2DModel`` folder (class-conditional, written here with random weights)."""
  import json
  diffusers = pytest.importorskip('diffusers')
  diffusers.UNet2DModel(
      sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32),
      down_block_types=('DownBlock2D', 'DownBlock2D'), up_block_types=('UpBlock2D', 'UpBlock2D'),
      layers_per_block=1, norm_num_groups=8, num_class_embeds=11).save_pretrained(
          tmp_path / 'ddpm')
  _run_full_cells_on_tfds_mock('diffusion.ipynb', tmp_path, monkeypatch, 40,
                               UNET=tmp_path / 'ddpm')
  results = json.loads((tmp_path / 'results_generation' / 'results.json').read_text())
  assert results['dataset'] == 'cifar10' and results['forget_class'] == 0
  assert results['model']['pretrained'] == str(tmp_path / 'ddpm')
  assert set(results['methods']) == {'salun', 'sfron'}
  assert results['hparams']['salun']['lr'] == 1e-4 and results['hparams']['salun']['steps'] == 2
  assert results['evaluation']['sample_eta'] == 1.0      # the references' sampler, kept


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
