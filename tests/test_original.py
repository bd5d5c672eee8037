"""Your own model and forget set: ``jaxunlearn run --original PATH`` (our orbax checkpoint or
a reference PyTorch ResNet) skips training the original; ``--scenario indices:FILE`` forgets
the listed training examples; bad files fail before any compute."""

import json

import numpy as np
import pytest

from jaxunlearn.checkpoint import save_variables
from jaxunlearn.cli import main
from jaxunlearn.data import load_dataset, make_split, parse_scenario
from jaxunlearn.models import make_model
from jaxunlearn.train import init_variables

TINY = ['--quiet', '--parallel', 'none', '--methods', 'ft', '--seeds', '0', '--set',
        'ft.epochs=1', '--set', 'retrain.epochs=1', '--alignment-every', '0', '--set',
        'train.epochs=1', '--model', 'resnet1', '--image-size', '8']


def test_indices_file_forgets_exactly_those_examples(tmp_path):
  ds = load_dataset('digits')
  listed = [5, 17, 3, 400, 1437]
  text = tmp_path / 'forget.txt'
  text.write_text('# my forget set\n5, 17\n3 400\n1437  # the last training image\n')
  npy = tmp_path / 'forget.npy'
  np.save(npy, np.array(listed, np.int64))
  for path in (text, npy):
    split = make_split(ds, f'indices:{path}', seed=0)
    assert split.forget.tolist() == sorted(listed)
    assert len(split.retain) == len(ds.y_train) - 5 and len(split.test) == len(ds.y_test)
    assert make_split(ds, f'indices:{path}', seed=7).forget.tolist() == sorted(listed)
  assert str(parse_scenario(f'indices:{text}')) == f'indices:{text}'


@pytest.mark.parametrize('content, message', [
    ('', 'lists no indices'),
    ('1\n2\n2\n', r'1 indices appear more than once \(2\)'),
    ('1\n-4\n', 'negative index -4'),
    ('1\nseven\n', "'seven' is not an integer index"),
    (np.array([1.5, 2.0]), 'indices must be integers'),
    (np.zeros((2, 2), np.int64), 'must be 1-D'),
])
def test_bad_indices_file_is_a_clear_error(tmp_path, content, message):
  if isinstance(content, str):
    path = tmp_path / 'f.txt'
    path.write_text(content)
  else:
    path = tmp_path / 'f.npy'
    np.save(path, content)
  with pytest.raises(ValueError, match=message):
    parse_scenario(f'indices:{path}')


def test_cli_refuses_bad_forget_files_and_originals_before_compute(tmp_path, capsys):
  """Each of these exits 2 with its message, and leaves neither results nor a cache."""
  far = tmp_path / 'far.txt'
  far.write_text('3\n99999\n')
  wide = tmp_path / 'wide'
  save_variables(wide, init_variables(make_model('resnet1', 10, 8), (8, 8, 1), 0))
  cases = [
      (['--scenario', f'indices:{tmp_path / "nope.txt"}'], 'no such file'),
      (['--scenario', f'indices:{far}'], r'1 indices lie beyond the 1438 training examples'),
      (['--original', str(tmp_path / 'missing')], 'no such file or directory'),
      (['--original', str(wide), '--width', '4'], 'does not hold variables of --model '
       'resnet1 --width 4'),
  ]
  for argv, message in cases:
    cache = tmp_path / 'cache'
    code = main(['run', '--out', str(tmp_path / 'out'), '--cache-dir', str(cache), *TINY,
                 *argv])
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    import re
    assert re.search(message, err), err
    assert not (tmp_path / 'out' / 'results.json').exists()
    assert not any(cache.glob('original-*')) and not any(cache.glob('retrain-*'))


def test_original_from_our_checkpoint_is_not_trained(tmp_path):
  """The original's metrics are those of the given weights (untrained weights here: a
  trained original would score far higher), and no original is trained or cached."""
  model = make_model('resnet1', 10, 4)
  variables = init_variables(model, (8, 8, 1), 123)
  save_variables(tmp_path / 'mine', variables)
  out, cache = tmp_path / 'out', tmp_path / 'cache'
  assert main(['run', '--out', str(out), '--cache-dir', str(cache), '--width', '4',
               '--scenario', 'random:10', '--original', str(tmp_path / 'mine'), *TINY]) == 0
  results = json.loads((out / 'results.json').read_text())
  ds = load_dataset('digits', image_size=8)
  logits = model.apply(variables, ds.x_test, train=False)
  ta = 100 * float(np.mean(np.argmax(logits, -1) == ds.y_test))
  assert results['original']['TA']['mean'] == pytest.approx(ta, abs=1e-6)
  assert results['model']['original']['path'] == str((tmp_path / 'mine').absolute())
  from jaxunlearn.models.conv import lowering
  assert results['model']['conv'] == lowering() == 'auto'   # how its convolutions ran
  assert not any(cache.glob('original-*')) and any(cache.glob('retrain-*'))


def test_original_from_a_reference_pytorch_checkpoint(tmp_path):
  """A SalUn-layout PyTorch ResNet (one block, 1 input channel for the digits, its own input
  normalisation): the run's original scores what the PyTorch network scores on the raw
  test pixels, so conversion and re-normalisation agree end to end; the wrong width is
  refused naming the right flags."""
  torch = pytest.importorskip('torch')
  from torch_resnets import RefResNet
  torch.manual_seed(0)
  net = RefResNet('salun', width=4, stages=(1,), channels=1, mean=(0.3,), std=(0.4,)).eval()
  path = tmp_path / 'resnet.pth.tar'
  torch.save({'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, path)
  ds = load_dataset('digits', image_size=8)
  raw = ds.x_test * ds.pixel_std[0] + ds.pixel_mean[0]
  with torch.no_grad():
    want = net(torch.from_numpy(raw.transpose(0, 3, 1, 2).copy())).numpy().argmax(-1)
  ta = 100 * float(np.mean(want == ds.y_test))
  out = tmp_path / 'out'
  assert main(['run', '--out', str(out), '--no-cache', '--width', '4', '--scenario',
               'random:10', '--original', str(path), *TINY]) == 0
  results = json.loads((out / 'results.json').read_text())
  assert results['original']['TA']['mean'] == pytest.approx(ta, abs=1e-6)
  assert results['model']['original']['normalization'] == [[pytest.approx(0.3)],
                                                           [pytest.approx(0.4)]]
  assert main(['run', '--out', str(tmp_path / 'o2'), '--no-cache', '--width', '8',
               '--original', str(path), *TINY]) == 2
