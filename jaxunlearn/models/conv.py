"""A drop-in ``lax.conv_general_dilated`` that is fast on XLA:CPU for small feature maps.

XLA:CPU lowers a convolution to its own convolution kernels (YNNPACK or Eigen). They are
quick on large feature maps and slow on small ones: a 3x3 convolution of a
``[128, 2, 2, 128]`` input (ResNet-18's last stage at 16x16 images) takes 9.6 ms forward and
10.6 ms with its gradients where the same arithmetic as one matrix product takes 1.3 and
2.0 ms; the stride-2 convolution into that stage 7.0 ms with gradients against 1.1. On such
maps :func:`conv_general_dilated` writes the convolution as what it is, one matrix
product of the ``kh * kw`` shifted input windows (im2col) with the kernel reshaped to
``[kh * kw * in, out]``; XLA differentiates and fuses that like any other product. On
large maps (where the window matrix is many megabytes and XLA's convolution is the
faster) and on every other backend (cuDNN and the TPU's convolutions are already the
fast path) it is ``lax.conv_general_dilated`` itself.

The result is the convolution's up to float32 rounding (the products are summed in
another order: max differences around 1e-6 of outputs of size 1) and the parameters are
the same (flax's ``[kh, kw, in, out]`` kernel), so a model built with it loads every
checkpoint of one built without.

``JAXUNLEARN_CPU_CONV`` chooses, read when a model is traced: ``auto`` (the default: im2col
where it measured the faster, :func:`prefers_im2col`), ``xla`` (never) or ``im2col``
(always, where it applies); :func:`set_cpu_conv` does the same from Python.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# 'auto' takes the product where experiments/bench_conv.py measured it the faster on a
# 2-core AMD EPYC (ResNet-18 at width 16 / 16x16 / batch 128 and width 64 / 32x32 / batch 64,
# forward + gradients): every 1x1 convolution (a strided slice and a product, no window
# copies: up to 1.9x faster); outputs of at most TINY_MAP_PIXELS pixels (2x2: 5.9x); and
# convolutions whose window matrix holds at most SMALL_WINDOW_VALUES values per image
# (output pixels x kh x kw x channels in: the stem, 1.8x; a stride-2 3x3 into 8x8 or 4x4,
# 1.2-6x; 4x4 maps of 64 channels, 1.2x). Above that, copying the windows costs more than
# XLA's convolution (at 16x16 with 16 channels, 36,864 values, the product is 4.8x slower).
TINY_MAP_PIXELS = 4
SMALL_WINDOW_VALUES = 12288

_MODES = ('auto', 'xla', 'im2col')
_mode: str | None = None


def set_cpu_conv(mode: str | None) -> None:
  """Chooses how :func:`conv_general_dilated` lowers on the CPU for models traced from now
  on: ``'auto'``, ``'xla'`` or ``'im2col'``; ``None`` returns to ``JAXUNLEARN_CPU_CONV``
  (default ``'auto'``). Already compiled functions keep what they were traced with."""
  global _mode
  if mode is not None and mode not in _MODES:
    raise ValueError(f'cpu conv mode {mode!r}: choose one of {_MODES}')
  _mode = mode


def cpu_conv_mode() -> str:
  """The mode in force: :func:`set_cpu_conv`'s, else ``JAXUNLEARN_CPU_CONV``, else 'auto'."""
  if _mode is not None:
    return _mode
  mode = os.environ.get('JAXUNLEARN_CPU_CONV', 'auto').strip().lower() or 'auto'
  if mode not in _MODES:
    raise ValueError(f'JAXUNLEARN_CPU_CONV={mode!r}: set it to one of {_MODES} (or unset it)')
  return mode


def lowering() -> str:
  """How convolutions traced now lower: the CPU mode (``'auto'``, ``'xla'``, ``'im2col'``)
  on the CPU, ``'xla'`` on other backends (what ``results.json`` records)."""
  return cpu_conv_mode() if jax.default_backend() == 'cpu' else 'xla'


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  """Whether ``dimension_numbers`` are flax's 2-D default (NHWC input, HWIO kernel)."""
  if ndim != 4 or dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return (tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)
            and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1)
            and tuple(dimension_numbers.out_spec) == (0, 3, 1, 2))
  return tuple(dimension_numbers) == ('NHWC', 'HWIO', 'NHWC')


def prefers_im2col(kernel_hw: Sequence[int], cin: int, out_hw: Sequence[int]) -> bool:
  """Whether 'auto' lowers a convolution with this kernel, input channels and output map
  as the im2col product (the rule measured above)."""
  kh, kw = kernel_hw
  pixels = out_hw[0] * out_hw[1]
  return ((kh, kw) == (1, 1) or pixels <= TINY_MAP_PIXELS
          or pixels * kh * kw * cin <= SMALL_WINDOW_VALUES)


def _pads(padding, in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int]):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _im2col(lhs, rhs, strides, pads, out_hw, precision, preferred_element_type):
  """The convolution as one product: ``[N, Ho, Wo, kh*kw*in] @ [kh*kw*in, out]``."""
  kh, kw, cin, cout = rhs.shape
  n = lhs.shape[0]
  (top, bottom), (left, right) = pads
  sh, sw = strides
  ho, wo = out_hw
  x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  windows = [lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                       (1, sh, sw, 1))
             for i in range(kh) for j in range(kw)]
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  return lax.dot_general(patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated``, lowered as an im2col product on the CPU where that is
  the faster (see the module's docstring); same arguments, same result up to rounding.
  Pass it to flax: ``nn.Conv(..., conv_general_dilated=conv_general_dilated)``."""
  call_lax = lambda: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  mode = cpu_conv_mode()
  plain = (mode != 'xla' and jax.default_backend() == 'cpu'
           and _is_nhwc_hwio(dimension_numbers, jnp.ndim(lhs)) and jnp.ndim(rhs) == 4
           and feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if not plain:
    return call_lax()
  strides = tuple(int(s) for s in window_strides)
  pads = _pads(padding, lhs.shape[1:3], rhs.shape[:2], strides)
  out_h = (lhs.shape[1] + sum(pads[0]) - rhs.shape[0]) // strides[0] + 1
  out_w = (lhs.shape[2] + sum(pads[1]) - rhs.shape[1]) // strides[1] + 1
  if out_h < 1 or out_w < 1 or any(p < 0 for pair in pads for p in pair):
    return call_lax()   # lax's own checks and messages
  if mode == 'auto' and not prefers_im2col(rhs.shape[:2], rhs.shape[2], (out_h, out_w)):
    return call_lax()
  return _im2col(lhs, rhs, strides, pads, (out_h, out_w), precision, preferred_element_type)
