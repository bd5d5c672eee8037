"""PyTorch networks with the reference ResNets' structure and state-dict names (SalUn's
torchvision-style CIFAR ResNet with its normalisation layer, SFR-on's kuangliu ResNet),
written here for parity tests; random weights and random BatchNorm statistics."""

import torch

nn = torch.nn


class _Block(nn.Module):
  def __init__(self, cin, cout, stride, shortcut_name):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = shortcut_name
      setattr(self, shortcut_name, nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                 nn.BatchNorm2d(cout)))

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return torch.relu(out + (getattr(self, self.proj)(x) if self.proj else x))


class _Normalize(nn.Module):
  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer('mean', torch.tensor(mean))
    self.register_buffer('std', torch.tensor(std))

  def forward(self, x):
    return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


class RefResNet(nn.Module):
  """``salun``: normalize + conv1/bn1/layerN/fc with downsample; ``sfron``: no normalize,
  shortcut and linear; global average pooling either way (kuangliu's avg_pool2d(4) on the
  4x4 map of a 32x32 input is the same)."""

  def __init__(self, layout, num_classes=10, width=4, stages=(2, 2, 2, 2), channels=3,
               mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)):
    super().__init__()
    if layout == 'salun':
      self.normalize = _Normalize(list(mean[:channels]), list(std[:channels]))
    self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    cin = width
    for i, n in enumerate(stages):
      cout = width * 2**i
      blocks = []
      for j in range(n):
        blocks.append(_Block(cin, cout, 2 if i and not j else 1,
                             'downsample' if layout == 'salun' else 'shortcut'))
        cin = cout
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.stages = len(stages)
    setattr(self, 'fc' if layout == 'salun' else 'linear', nn.Linear(cin, num_classes))
    self.layout = layout
    with torch.no_grad():  # BatchNorm statistics and affine terms away from 0 / 1
      for m in self.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.running_mean.normal_(0, 0.3)
          m.running_var.uniform_(0.5, 2.0)
          m.weight.uniform_(0.5, 1.5)
          m.bias.normal_(0, 0.2)

  def forward(self, x):
    if self.layout == 'salun':
      x = self.normalize(x)
    x = torch.relu(self.bn1(self.conv1(x)))
    for i in range(self.stages):
      x = getattr(self, f'layer{i + 1}')(x)
    x = x.mean(dim=(2, 3))
    return (self.fc if self.layout == 'salun' else self.linear)(x)
