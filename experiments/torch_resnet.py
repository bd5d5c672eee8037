"""The reference ResNet-18 (CIFAR stem) in PyTorch, for the PyTorch side of ``bench.py``.

The kuangliu-style CIFAR ResNet the SalUn and SFR-on references train, with modules named
as our Flax submodules, so :func:`load_flax` copies a :class:`jaxunlearn.models.ResNet`'s
params and BatchNorm statistics one by one; ``bench.py`` checks that both give the same
logits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_LEAF = {'weight': 'kernel', 'bias': 'bias'}
_BN_LEAF = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}


class Block(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.project = stride != 1 or cin != cout
    if self.project:
      self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
      self.shortcut_bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (self.shortcut_bn(self.shortcut_conv(x)) if self.project else x))


class TorchResNet18(nn.Module):
  def __init__(self, num_classes: int, width: int = 64, stages=(2, 2, 2, 2),
               in_channels: int = 3):
    super().__init__()
    self.stem_conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(width)
    self.blocks = []
    cin = width
    for i, n in enumerate(stages):
      for j in range(n):
        cout = width * 2 ** i
        block = Block(cin, cout, 2 if i > 0 and j == 0 else 1)
        self.add_module(f'stage{i + 1}_block{j + 1}', block)
        self.blocks.append(block)
        cin = cout
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = torch.relu(self.stem_bn(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    return self.head(x.mean(dim=(2, 3)))


def flax_path_of(name: str) -> str:
  """'stage1_block1.bn1.weight' -> 'stage1_block1/bn1/scale' (a params path)."""
  *modules, leaf = name.split('.')
  table = _BN_LEAF if 'bn' in modules[-1] else _LEAF
  return '/'.join([*modules, table[leaf]])


def load_flax(net: TorchResNet18, variables) -> None:
  """Copies Flax ``{'params', 'batch_stats'}`` into ``net`` (layouts converted)."""
  def lookup(tree, path):
    for part in path.split('/'):
      tree = tree[part]
    return np.asarray(tree)

  with torch.no_grad():
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
      if name.endswith('num_batches_tracked'):
        continue
      path = flax_path_of(name)
      stats = name.endswith(('running_mean', 'running_var'))
      value = lookup(variables['batch_stats' if stats else 'params'], path)
      if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
      elif value.ndim == 2:
        value = value.T
      tensor.copy_(torch.from_numpy(np.array(value, np.float32)))
