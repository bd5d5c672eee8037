"""FID Inception-v3: our Flax port and converter against pytorch-fid's own network."""

import jax
import numpy as np
import pytest
import torch

from jaxunlearn.convert.pytorch_fid import convert_fid_inception, load_fid_inception
from jaxunlearn.data import load_digits
from jaxunlearn.evaluate.generation import InceptionFeatures, fid_from_features
from jaxunlearn.models.inception import FIDInceptionV3, fid_preprocess
from tests.torch_reference import import_pytorch_fid, random_fid_inception


@pytest.fixture(scope='module')
def reference():
  net, wrapper = random_fid_inception(seed=0)
  state = {k: v.detach().clone() for k, v in net.state_dict().items()}
  return net, wrapper, state


@pytest.fixture(scope='module')
def ours(reference):
  model = FIDInceptionV3()
  return model, convert_fid_inception(reference[2], model), jax.jit(model.apply,
                                                                     static_argnames='logits')


def _torch_features(wrapper, images_nhwc):
  x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return wrapper(x)[0][:, :, 0, 0].numpy()


def _rel(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_pool_features_match_pytorch_fid_on_digits(reference, ours):
  """Real 8x8 digits, grey -> RGB and blown up to 299x299 as pytorch-fid does."""
  _, wrapper, _ = reference
  model, variables, apply = ours
  ds = load_digits(8, pixels='symmetric')
  grey = (ds.x_train[:4] + 1) / 2
  want = _torch_features(wrapper, np.repeat(grey, 3, axis=-1))
  got = np.asarray(apply(variables, grey))
  assert got.shape == (4, 2048)
  # The features differ between images (a port that ignored its input would fail here).
  assert np.abs(want[0] - want[1]).max() > 1e-2 * np.abs(want).max()
  assert _rel(got, want) < 1e-4


def test_downsampled_rgb_and_logits_match(reference, ours):
  """A larger-than-299 RGB image (resize without antialiasing) and the 1008 logits."""
  net, wrapper, _ = reference
  model, variables, apply = ours
  rng = np.random.default_rng(0)
  small = rng.uniform(size=(2, 24, 20, 3)).astype(np.float32)
  images = np.asarray(jax.image.resize(small, (2, 320, 310, 3), 'bilinear'))
  images = np.clip(images, 0, 1)
  want = _torch_features(wrapper, images)
  assert _rel(np.asarray(apply(variables, images)), want) < 1e-4
  with torch.no_grad():
    want_logits = net.fc(torch.from_numpy(want)).numpy()
  got_logits = np.asarray(apply(variables, images, logits=True))
  assert got_logits.shape == (2, 1008)
  assert _rel(got_logits, want_logits) < 1e-4


def test_wrapper_state_dict_layout_converts_to_the_same_network(reference, ours):
  _, wrapper, _ = reference
  model, variables, _ = ours
  converted = convert_fid_inception(wrapper.state_dict(), model)
  assert not np.any(converted['params']['fc']['kernel'])  # the wrapper has no classifier
  converted['params']['fc'] = variables['params']['fc']
  jax.tree.map(np.testing.assert_array_equal, converted, variables)


def test_converter_lists_what_does_not_fit(reference):
  state = dict(reference[2])
  state['AuxLogits.fc.weight'] = torch.zeros(3, 3)
  state['fc.weight'] = torch.zeros(1000, 2048)  # torchvision's ImageNet classifier
  del state['Mixed_7c.branch_pool.conv.weight']
  with pytest.raises(ValueError) as e:
    convert_fid_inception(state)
  msg = str(e.value)
  assert 'AuxLogits.fc.weight' in msg and 'fc.weight: (2048, 1000)' in msg
  assert 'Mixed_7c.branch_pool.conv.weight' in msg


def test_load_from_pth_and_npz(reference, ours, tmp_path):
  _, _, state = reference
  _, variables, _ = ours
  torch.save(state, tmp_path / 'pt_inception.pth')
  np.savez(tmp_path / 'pt_inception.npz', **{k: v.numpy() for k, v in state.items()})
  for name in ('pt_inception.pth', 'pt_inception.npz'):
    _, loaded = load_fid_inception(tmp_path / name)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(FileNotFoundError, match='FID_WEIGHTS_URL'):
    load_fid_inception(tmp_path / 'missing.pth')


@pytest.mark.slow  # compiles the 299x299 network for two batch shapes: ~60 s on 2 cores
def test_inception_features_batches_quantizes_and_checks_input(ours):
  model, variables, apply = ours
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(5, 8, 8, 1)).astype(np.float32)
  features = InceptionFeatures(model, variables, batch_size=2)
  got = features(images)  # 3 batches, the last padded
  want = np.asarray(apply(variables, np.round(images * 255) / 255))
  assert got.shape == (5, 2048)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  # Out-of-range pixels are clipped as a PNG would; NaN is refused.
  np.testing.assert_allclose(features(images * 3 - 1), features(np.clip(images * 3 - 1, 0, 1)))
  with pytest.raises(ValueError, match='NaN'):
    features(np.full((2, 8, 8, 1), np.nan, np.float32))
  with pytest.raises(ValueError, match='1 or 3'):
    features(np.zeros((2, 8, 8, 2), np.float32))
  # FID of a set with itself is 0, with a different set positive.
  a, b = features(images), features(rng.uniform(size=(5, 8, 8, 1)).astype(np.float32))
  assert abs(fid_from_features(a, a)) < 1e-3 * abs(fid_from_features(a, b))


def test_preprocess_matches_torch_interpolate():
  x = np.random.default_rng(2).uniform(size=(1, 3, 13, 17)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 299),
                                         mode='bilinear', align_corners=False).numpy()
  got = np.asarray(fid_preprocess(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(got, 2 * want - 1, atol=1e-6)
  with pytest.raises(ValueError, match='1 or 3'):
    fid_preprocess(np.zeros((1, 8, 8, 4)))


def test_reference_is_pytorch_fids_own_code():
  pi = import_pytorch_fid()
  assert issubclass(pi.FIDInceptionA, torch.nn.Module)
  assert pi.FID_WEIGHTS_URL.endswith('pt_inception-2015-12-05-6726825d.pth')
