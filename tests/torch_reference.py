"""pytorch-fid's Inception-v3 with random weights: the reference for our Flax port.

pytorch-fid builds its network from torchvision's Inception blocks. The torchvision wheel
on PyPI is linked against CUDA libraries that the CPU build of torch installed here does
not ship, so ``import torchvision`` fails while loading its compiled operators (``nms``
and friends), which no model code we need touches. When that happens, torchvision's
package is registered without running its ``__init__``, and only its pure-Python model
code (``torchvision.models.inception``) is imported from it: the same classes, unchanged.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types


def ensure_torchvision_importable() -> None:
  """Makes ``import torchvision`` work (its Python code only, if its compiled operators do
  not load). diffusers imports torchvision whenever it is installed, so ``conftest.py``
  calls this before any test imports diffusers."""
  try:
    import torchvision  # noqa: F401
  except ModuleNotFoundError:
    return  # not installed: nothing imports it
  except (ImportError, OSError, RuntimeError):
    for name in [m for m in sys.modules if m == 'torchvision' or m.startswith('torchvision.')]:
      del sys.modules[name]
    spec = importlib.util.find_spec('torchvision')
    if spec is None or spec.origin is None:
      raise
    package = types.ModuleType('torchvision')
    package.__path__ = [os.path.dirname(spec.origin)]
    package.__spec__ = spec  # its real spec (find_spec must work), its loader not run
    package.__version__ = importlib.metadata.version('torchvision')
    sys.modules['torchvision'] = package


def import_pytorch_fid():
  """``pytorch_fid.inception``, importing torchvision's Python code only if need be."""
  ensure_torchvision_importable()
  importlib.import_module('torchvision.models.inception')
  return importlib.import_module('pytorch_fid.inception')


def random_fid_inception(seed: int = 0):
  """``(net, wrapper)``: pytorch-fid's ``fid_inception_v3`` network with random weights
  (its own builder would download the real ones) and its ``InceptionV3`` wrapper around it
  (resize to 299, scale to [-1, 1], pool-3 features).

  Random weights as initialised make every image give the same features (the signal dies
  out within a few layers), which would let a wrong port pass; so the convolutions get
  He-normal weights, the batch norms random affine parameters, and the running statistics
  are those of a batch of images, as after training.
  """
  import torch

  pi = import_pytorch_fid()
  gen = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  # The blocks pytorch-fid patches (fid_inception_v3 without its download).
  net.Mixed_5b = pi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
  for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
    setattr(net, name, pi.FIDInceptionC(768, channels_7x7=c7))
  net.Mixed_7b = pi.FIDInceptionE_1(1280)
  net.Mixed_7c = pi.FIDInceptionE_2(2048)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.uniform_(-0.2, 0.2, generator=gen)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
      elif isinstance(m, torch.nn.Linear):
        m.weight.normal_(0.0, 0.02, generator=gen)
        m.bias.uniform_(-0.1, 0.1, generator=gen)
    net.train()
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 16, 16, generator=gen),
                                             size=(299, 299), mode='bilinear')
    net(smooth * 2 - 1)
  net.eval()
  real_builder = pi.fid_inception_v3
  pi.fid_inception_v3 = lambda: net
  try:
    wrapper = pi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  finally:
    pi.fid_inception_v3 = real_builder
  return net, wrapper
