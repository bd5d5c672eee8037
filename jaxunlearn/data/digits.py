"""scikit-learn's handwritten digits: the embedded default benchmark.

1,797 real 8x8 grey-scale images of the digits 0-9 (the UCI optical recognition set) that
ship inside scikit-learn, so they load without a network. The train/test split is fixed:
a stratified 80/20 split with its own seed, independent of any unlearning scenario.
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.data.dataset import Dataset, channel_stats, resize_images, standardize

TEST_FRACTION = 0.2
_SPLIT_SEED = 20240101  # Fixed forever: changing it changes every cached model.


def load_digits(image_size: int = 16, pixels: str = 'standardized') -> Dataset:
  """Loads digits, upsampled (bilinear) to ``image_size``.

  Args:
    image_size: side of the square images given to the model (8 = native).
    pixels: 'standardized' (zero mean, unit variance over the training images: for
      classifiers) or 'symmetric' (ink 0..1 mapped to -1..1: for diffusion models).

  Returns:
    A :class:`Dataset` with 1,438 training and 359 test images of shape
    ``[image_size, image_size, 1]``.
  """
  from sklearn.datasets import load_digits as _sk_load_digits
  if image_size < 8:
    raise ValueError(f'digits images are 8x8; image_size must be >= 8, got {image_size}')
  bunch = _sk_load_digits()
  x = (bunch.images.astype(np.float32) / 16.0)[..., None]  # pixel values are 0..16
  y = bunch.target.astype(np.int32)
  rng = np.random.default_rng(_SPLIT_SEED)
  test = np.zeros(len(y), bool)
  for c in range(10):  # Stratified: the same test fraction of every class.
    idx = np.flatnonzero(y == c)
    test[rng.permutation(idx)[:int(round(TEST_FRACTION * len(idx)))]] = True
  x = resize_images(x, image_size)
  if pixels == 'symmetric':
    x = np.clip(x, 0.0, 1.0) * 2 - 1
    x_train, x_test = x[~test], x[test]
  elif pixels == 'standardized':
    stats = channel_stats(x[~test])
    x_train, x_test = standardize(x[~test], x[test])
  else:
    raise ValueError(f"pixels must be 'standardized' or 'symmetric', got {pixels!r}")
  extra = dict(zip(('pixel_mean', 'pixel_std'), stats)) if pixels == 'standardized' else {}
  return Dataset('digits', x_train, y[~test], x_test, y[test], num_classes=10, **extra)
