"""The references' PyTorch ResNet checkpoints convert to our ResNet with the same logits
(PyTorch networks of their structure and state-dict names: ``torch_resnets.py``)."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from jaxunlearn.convert.torch_resnet import (SFRON_NORMALIZATION, convert_resnet_state_dict,
                                             load_torch_resnet)
from torch_resnets import RefResNet


def _logits(converted, raw_nhwc):
  x = (raw_nhwc - np.asarray(converted.mean, np.float32)) / np.asarray(converted.std,
                                                                          np.float32)
  return np.asarray(converted.model.apply(converted.variables, x, train=False))


@pytest.mark.parametrize('layout, stages', [('salun', (2, 2, 2, 2)), ('sfron', (2, 2, 2, 2)),
                                            ('salun', (1, 1, 1))])
def test_reference_checkpoint_gives_the_same_logits(tmp_path, layout, stages):
  torch.manual_seed(0)
  net = RefResNet(layout, stages=stages).eval()
  raw = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
  want = net(torch.from_numpy(raw.transpose(0, 3, 1, 2))).detach().numpy()
  sd = {f'module.{k}': v for k, v in net.state_dict().items()}  # as DataParallel saves
  path = tmp_path / 'model.pth.tar'
  torch.save({'state_dict': sd, 'epoch': 182} if layout == 'salun' else sd, path)
  if layout == 'salun':
    converted = load_torch_resnet(path)
    assert converted.std == pytest.approx((0.2470, 0.2435, 0.2616))
  else:  # SFR-on normalises in its data transforms: the network sees normalised inputs
    converted = load_torch_resnet(path, dataset='cifar10')
    assert (converted.mean, converted.std) == SFRON_NORMALIZATION['cifar10']
    mean, std = (np.asarray(v, np.float32) for v in SFRON_NORMALIZATION['cifar10'])
    want = net(torch.from_numpy(((raw - mean) / std).transpose(0, 3, 1, 2))).detach().numpy()
  assert converted.layout == layout and converted.model.stage_sizes == stages
  got = _logits(converted, raw)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_state_dict_that_does_not_fit_fails_saying_what():
  torch.manual_seed(0)
  sd = RefResNet('salun').state_dict()
  with pytest.raises(ValueError, match='tensors without a variable'):
    convert_resnet_state_dict({**sd, 'layer1.0.extra.weight': torch.zeros(3)})
  del sd['layer2.0.downsample.1.running_var']
  with pytest.raises(ValueError, match='variables without a tensor.*shortcut_bn/var'):
    convert_resnet_state_dict(sd)
  with pytest.raises(ValueError, match='not a reference ResNet state dict'):
    convert_resnet_state_dict({'weight': torch.zeros(3)})


def test_unreadable_file_fails_clearly(tmp_path):
  bad = tmp_path / 'x.pth'
  bad.write_text('not a checkpoint')
  with pytest.raises(ValueError, match='not a PyTorch checkpoint'):
    load_torch_resnet(bad)
  with pytest.raises(FileNotFoundError):
    load_torch_resnet(tmp_path / 'missing.pth')
