"""Real benchmarks through TFDS random-access data sources (no TensorFlow needed).

``tfds.data_source`` reads the ArrayRecord files that ``tfds build`` (or a previous
``tfds.load``) wrote to ``data_dir``; nothing is downloaded here. Prepare the data once on
a machine with a network::

    tfds build cifar10 --data_dir ~/tensorflow_datasets

then ``jaxunlearn run --dataset cifar10 --data-dir ~/tensorflow_datasets``.
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.data.dataset import Dataset, channel_stats, resize_images, standardize

# Keys of the image and label features of the datasets we know; others use the defaults.
_FEATURE_KEYS = {'cifar10': ('image', 'label'), 'cifar100': ('image', 'label')}


def _read_split(source, image_key: str, label_key: str, batch: int = 4096):
  xs, ys = [], []
  for start in range(0, len(source), batch):
    records = [source[i] for i in range(start, min(start + batch, len(source)))]
    xs.append(np.stack([np.asarray(r[image_key]) for r in records]))
    ys.append(np.asarray([int(r[label_key]) for r in records], np.int32))
  return np.concatenate(xs), np.concatenate(ys)


def load_tfds(name: str, data_dir: str | None = None, image_size: int | None = None,
              train_split: str = 'train', test_split: str = 'test',
              image_key: str | None = None, label_key: str | None = None,
              pixels: str = 'standardized') -> Dataset:
  """Loads a TFDS image classification dataset fully into memory.

  Args:
    name: TFDS name, e.g. ``'cifar10'``, ``'cifar100'`` or any image dataset with an
      image and an integer label feature.
    data_dir: where ``tfds build`` put the data (TFDS's default when None).
    image_size: resize to this square size (kept as stored when None).
    train_split, test_split: TFDS split names.
    image_key, label_key: feature names (default ``'image'`` and ``'label'``).
    pixels: 'standardized' (per channel over the training images: for classifiers) or
      'symmetric' (0..255 mapped to -1..1: for diffusion models).

  Returns:
    A :class:`Dataset` of float32 images.
  """
  if pixels not in ('standardized', 'symmetric'):
    raise ValueError(f"pixels must be 'standardized' or 'symmetric', got {pixels!r}")
  import tensorflow_datasets as tfds
  default_image, default_label = _FEATURE_KEYS.get(name, ('image', 'label'))
  image_key, label_key = image_key or default_image, label_key or default_label
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    num_classes = builder.info.features[label_key].num_classes
    train = tfds.data_source(name, split=train_split, data_dir=data_dir, download=False)
    test = tfds.data_source(name, split=test_split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises several types; all mean "not prepared here".
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not available in data_dir={data_dir!r} ({e}). '
        f'Prepare it once with `tfds build {name} --data_dir DIR` on a machine with a '
        'network, then pass --data-dir DIR.') from e
  x_train, y_train = _read_split(train, image_key, label_key)
  x_test, y_test = _read_split(test, image_key, label_key)
  x_train, x_test = x_train.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
  if x_train.ndim == 3:  # grey-scale stored without a channel axis
    x_train, x_test = x_train[..., None], x_test[..., None]
  if image_size is not None:
    x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
  if pixels == 'symmetric':
    x_train, x_test = 2 * x_train - 1, 2 * x_test - 1
  else:
    stats = channel_stats(x_train)
    x_train, x_test = standardize(x_train, x_test)
  return Dataset(name, x_train, y_train, x_test, y_test, num_classes=int(num_classes),
                 **({} if pixels == 'symmetric' else dict(zip(('pixel_mean', 'pixel_std'),
                                                              stats))))
