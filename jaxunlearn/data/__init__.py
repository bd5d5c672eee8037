"""Datasets and forget/retain splits."""

from __future__ import annotations

from jaxunlearn.data.dataset import Dataset
from jaxunlearn.data.digits import load_digits
from jaxunlearn.data.splits import Scenario, UnlearnSplit, make_split, parse_scenario
from jaxunlearn.data.tfds import load_tfds

EMBEDDED = ('digits',)
# What is known of the embedded datasets without loading them: (classes, channels, images).
EMBEDDED_INFO = {'digits': (10, 1, 1797)}
MIN_IMAGE_SIZE = 8  # the models down-sample by 8 (ResNet stages, UNet levels, DiT patches)


def check_before_loading(dataset: str, image_size: int | None, scenario: str, *,
                         batch_size: int, channels_per_pixel: int,
                         data_dir: str | None = None) -> None:
  """Checks what can be checked of a run's data before any image is loaded (ValueError
  naming the option): the data directory, the image size, the forget class of an embedded dataset, and whether
  one training batch's activations (``batch_size`` x ``channels_per_pixel`` floats per
  pixel, a rough upper estimate for the model) and the resized dataset fit in memory."""
  import os
  if data_dir is not None and not os.path.isdir(data_dir):
    raise ValueError(f'--data-dir {data_dir}: no such directory (the TFDS data_dir where '
                     f'`tfds build {dataset} --data_dir DIR` put the prepared data)')
  if image_size is not None and image_size < MIN_IMAGE_SIZE:
    raise ValueError(f'--image-size must be >= {MIN_IMAGE_SIZE} (the models down-sample by '
                     f'8), got {image_size}')
  sc = parse_scenario(scenario)
  info = EMBEDDED_INFO.get(dataset)
  if info is not None and sc.kind == 'class' and not 0 <= sc.value < info[0]:
    raise ValueError(f'--scenario {scenario}: {dataset} has classes 0..{info[0] - 1}')
  if image_size is None:
    return
  try:
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    return
  pixels = image_size * image_size
  need = 4 * pixels * batch_size * channels_per_pixel
  if info is not None:
    need += 4 * pixels * info[1] * info[2]
  if need > memory:
    raise ValueError(f'--image-size {image_size}: one training batch of {batch_size} '
                     f'({pixels * batch_size * channels_per_pixel * 4 / 2**30:.0f} GiB of '
                     f'activations, roughly) and the data need about {need / 2**30:.0f} GiB, '
                     f'more than the {memory / 2**30:.0f} GiB of this machine: give a smaller '
                     '--image-size or a smaller batch (--set train.batch_size=N)')


def load_dataset(name: str = 'digits', data_dir: str | None = None,
                 image_size: int | None = None) -> Dataset:
  """Loads ``'digits'`` (embedded, default 16x16) or any TFDS image dataset by name."""
  if name == 'digits':
    return load_digits(image_size or 16)
  return load_tfds(name, data_dir=data_dir, image_size=image_size)


__all__ = ['Dataset', 'EMBEDDED_INFO', 'Scenario', 'check_before_loading', 'UnlearnSplit', 'load_dataset', 'load_digits', 'load_tfds',
           'make_split', 'parse_scenario']
