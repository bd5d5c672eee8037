"""Inception-v3 as the FID network: pytorch-fid's layout and arithmetic, in Flax, NHWC.

FID is only comparable across papers when it is computed with one network: the
TensorFlow Inception graph of 2015-12-05, which pytorch-fid ports to PyTorch as
``fid_inception_v3`` (torchvision's Inception-v3 with 1008 classes and four patched
blocks). This module reproduces that network, not torchvision's ImageNet model:

* every convolution is conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU;
* the average pools inside ``Mixed_5b-d``, ``Mixed_6b-e`` and ``Mixed_7b`` leave the zero
  padding out of the average (TensorFlow's rule, pytorch-fid's ``count_include_pad=False``);
* ``Mixed_7c`` pools with a max instead of an average (a quirk of the TF graph that
  pytorch-fid keeps, and so do we, or FIDs would not match published ones);
* inputs in ``[0, 1]`` are resized to 299x299 bilinearly (``align_corners=False``, no
  antialiasing, as ``F.interpolate``) and mapped to ``[-1, 1]``.

Module names are torchvision's attribute names (``Mixed_5b/branch1x1/conv``), so
:mod:`jaxunlearn.convert.pytorch_fid` maps pytorch-fid's weight file onto these variables
key by key; ``tests/test_inception.py`` checks the pool features against pytorch-fid's own
``InceptionV3`` built with random weights.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

FID_SIZE = 299
POOL_FEATURES = 2048


def _pad(padding) -> tuple:
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return ((ph, ph), (pw, pw))


class BasicConv2d(nn.Module):
  """torchvision's ``BasicConv2d``: conv without bias, BatchNorm (eps 1e-3), ReLU."""

  features: int
  kernel: Sequence[int]
  stride: int = 1
  padding: int | Sequence[int] = 0

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, tuple(self.kernel), (self.stride, self.stride),
                padding=_pad(self.padding), use_bias=False, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_same(x):
  # 3x3, stride 1, padding 1, the padded zeros not counted (TensorFlow's average pool).
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_valid(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding='VALID')


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv2d(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv2d(64, (5, 5), padding=2, name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, (3, 3), padding=1, name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, (3, 3), padding=1, name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):  # Mixed_6a: grid reduction 35 -> 17

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), stride=2, name='branch3x3')(x)
    bd = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, (3, 3), padding=1, name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, (3, 3), stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv2d(c, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv2d(c, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv2d(c, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # Mixed_7a: grid reduction 17 -> 8

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv2d(320, (3, 3), stride=2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, (3, 3), stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
  """``max_pool``: pytorch-fid's ``FIDInceptionE_2`` (Mixed_7c) pools with a max."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv2d(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)],
                         axis=-1)
    bd = BasicConv2d(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, (3, 3), padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)],
                         axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_same(x)
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def fid_preprocess(images, resize: bool = True):
  """``[N, H, W, C]`` images in ``[0, 1]`` (C = 1 or 3) -> the network's input: grey
  images repeated to RGB, resized to 299x299 as ``F.interpolate(mode='bilinear',
  align_corners=False)``, scaled to ``[-1, 1]``."""
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f'FID Inception takes [N, H, W, 1 or 3] images in [0, 1], '
                     f'got shape {x.shape}')
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if resize and x.shape[1:3] != (FID_SIZE, FID_SIZE):
    # Half-pixel centres and no antialiasing = torch's bilinear, align_corners=False.
    x = jax.image.resize(x, (x.shape[0], FID_SIZE, FID_SIZE, 3), 'bilinear',
                         antialias=False)
  return 2.0 * x - 1.0


class FIDInceptionV3(nn.Module):
  """pytorch-fid's Inception-v3. ``__call__`` returns the 2048 pool-3 features (FID);
  ``logits=True`` the 1008 logits of the TF graph's classifier (Inception Score).

  Input: ``[N, H, W, C]`` images in ``[0, 1]``; ``preprocess=False`` takes the network's
  own input (299x299 RGB in ``[-1, 1]``) instead.
  """

  num_classes: int = 1008

  @nn.compact
  def __call__(self, images, preprocess: bool = True, logits: bool = False):
    x = fid_preprocess(images) if preprocess else images
    x = BasicConv2d(32, (3, 3), stride=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, (3, 3), padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_valid(x)
    x = BasicConv2d(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_valid(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    # The classifier exists in the weight file; it is built (and converted) either way.
    out = nn.Dense(self.num_classes, name='fc')(pool)
    return out if logits else pool
