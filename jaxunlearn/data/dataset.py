"""In-memory image classification datasets: the embedded digits default and TFDS."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset held in memory as normalized NHWC float32 arrays.

  Attributes:
    name: dataset name, as accepted by :func:`jaxunlearn.data.load_dataset`.
    x_train, y_train: training images ``[N, H, W, C]`` and int32 labels ``[N]``.
    x_test, y_test: held-out test images and labels.
    num_classes: number of classes; labels lie in ``0..num_classes-1``.
    pixel_mean, pixel_std: per-channel statistics the images were standardized with
      (``x = (pixels in [0, 1] - mean) / std``), or None (images not standardized so).
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  pixel_mean: tuple | None = None
  pixel_std: tuple | None = None

  def __post_init__(self):
    for split in ('train', 'test'):
      x, y = getattr(self, f'x_{split}'), getattr(self, f'y_{split}')
      if x.ndim != 4:
        raise ValueError(f'{self.name}: x_{split} must be [N, H, W, C], got shape {x.shape}')
      if y.shape != (x.shape[0],):
        raise ValueError(f'{self.name}: y_{split} has shape {y.shape}, expected '
                         f'({x.shape[0]},) to match x_{split}')
      if y.size and (y.min() < 0 or y.max() >= self.num_classes):
        raise ValueError(f'{self.name}: {split} labels must lie in 0..{self.num_classes - 1}, '
                         f'found {int(y.min())}..{int(y.max())}')
    if self.x_train.shape[1:] != self.x_test.shape[1:]:
      raise ValueError(f'{self.name}: train images {self.x_train.shape[1:]} and test images '
                       f'{self.x_test.shape[1:]} differ in shape')

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])

  def renormalized(self, mean, std) -> Dataset:
    """The same images standardized with another per-channel ``mean`` and ``std`` of
    [0, 1] pixels (those a model was trained with: a converted reference checkpoint)."""
    if self.pixel_mean is None:
      raise ValueError(f'{self.name}: its images are not standardized [0, 1] pixels, so they '
                       'cannot be re-normalised for this model')
    old_m, old_s = (np.asarray(v, np.float32) for v in (self.pixel_mean, self.pixel_std))
    new_m, new_s = (np.asarray(v, np.float32) for v in (mean, std))
    if new_m.shape != old_m.shape or new_s.shape != old_s.shape:
      raise ValueError(f'{self.name} has {old_m.size} channels; the model expects '
                       f'{new_m.size}')
    fix = lambda x: ((x * old_s + old_m - new_m) / new_s).astype(np.float32)
    return dataclasses.replace(self, x_train=fix(self.x_train), x_test=fix(self.x_test),
                               pixel_mean=tuple(map(float, new_m)),
                               pixel_std=tuple(map(float, new_s)))


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of ``[N, H, W, C]`` images to ``[N, size, size, C]`` (no-op if equal)."""
  if x.shape[1:3] == (size, size):
    return x
  import jax  # Local: data code stays importable without initialising a backend.
  out = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method='bilinear',
                         antialias=True)
  return np.asarray(out, np.float32)


def channel_stats(x_train: np.ndarray) -> tuple[tuple, tuple]:
  """Per-channel ``(mean, std)`` of the training images (std + 1e-6)."""
  mean = x_train.mean(axis=(0, 1, 2))
  std = x_train.std(axis=(0, 1, 2)) + 1e-6
  return tuple(map(float, mean)), tuple(map(float, std))


def standardize(x_train: np.ndarray, x_test: np.ndarray):
  """Per-channel standardization with statistics of the training images only."""
  mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
  std = x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
  return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)
