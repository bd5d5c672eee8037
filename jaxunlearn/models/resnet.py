"""ResNet with the CIFAR stem (3x3 conv, stride 1, no max-pool) in Flax linen.

The structure follows the ResNet-18 that SalUn and SFR-on unlearn (kuangliu-style CIFAR
ResNet): a 3x3 stem, four stages of BasicBlocks with strides (1, 2, 2, 2), BatchNorm
after every convolution, a 1x1 projection shortcut where the shape changes, global average
pooling and a linear head. With ``width=64`` and 10 classes it has 11,173,962 parameters,
the count PyTorch reports for the reference model.

Variants are ``functools.partial`` of one module (as in flax's examples)::

    model = ResNet18(num_classes=10)
    variables = model.init(key, jnp.zeros((1, 32, 32, 3)), train=False)
    logits = model.apply(variables, x, train=False)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxunlearn.models.conv import conv_general_dilated

ModuleDef = Any


def _TorchPaddedConv(features, kernel_size, strides=(1, 1), **kwargs):
  """A convolution padded as PyTorch's ``Conv2d(padding=k // 2)``: ``k // 2`` on every
  side. XLA's 'SAME' pads a stride-2 3x3 convolution (0, 1) on an even input, one pixel off
  the reference network's (1, 1) (the two disagree on every stride-2 output)."""
  pad = [(k // 2, k // 2) for k in kernel_size]
  return nn.Conv(features, kernel_size, strides, padding=pad,
                 conv_general_dilated=conv_general_dilated, **kwargs)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with BatchNorm and an identity or 1x1 projection shortcut."""

  filters: int
  strides: int = 1
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    y = self.norm(name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           name='shortcut_conv')(x)
      residual = self.norm(name='shortcut_bn')(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """CIFAR-stem ResNet.

  Attributes:
    num_classes: size of the linear head.
    stage_sizes: number of BasicBlocks per stage; (2, 2, 2, 2) is ResNet-18.
    width: channels of the stem and first stage; stage i has ``width * 2**i``.
    dtype: computation dtype (params stay float32).
    axis_name: under ``pmap``, the device axis over which BatchNorm averages its batch
      statistics (synchronised BatchNorm: the global batch's statistics, as on one device).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    """Logits ``[B, num_classes]``, or with ``features`` the pooled penultimate features
    ``[B, width * 8]`` (the embedding generation metrics compare)."""
    conv = functools.partial(_TorchPaddedConv, use_bias=False, dtype=self.dtype)
    # PyTorch's BatchNorm2d defaults: momentum 0.1 (flax: 0.9), eps 1e-5.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.axis_name)
    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, (3, 3), name='stem_conv')(x)
    x = nn.relu(norm(name='stem_bn')(x))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, conv=conv, norm=norm,
                       name=f'stage{i + 1}_block{j + 1}')(x)
    x = jnp.mean(x, axis=(1, 2))
    if features:
      return jnp.asarray(x, jnp.float32)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), width=64)
ResNet10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1))
# Tiny variant for tests: one block, one stage.
_ResNet1 = functools.partial(ResNet, stage_sizes=(1,), width=4)

_REGISTRY = {
    'resnet18': ResNet18,
    'resnet10': ResNet10,
    'resnet1': _ResNet1,
}


def make_model(name: str, num_classes: int, width: int | None = None) -> ResNet:
  """Builds a registered model by name, optionally overriding its width."""
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; choose one of {sorted(_REGISTRY)}')
  kwargs = {} if width is None else {'width': width}
  return _REGISTRY[name](num_classes=num_classes, **kwargs)
