"""Datasets and forget/retain splits."""

from __future__ import annotations

from jaxunlearn.data.dataset import Dataset
from jaxunlearn.data.digits import load_digits
from jaxunlearn.data.splits import Scenario, UnlearnSplit, make_split, parse_scenario
from jaxunlearn.data.tfds import load_tfds

EMBEDDED = ('digits',)


def load_dataset(name: str = 'digits', data_dir: str | None = None,
                 image_size: int | None = None) -> Dataset:
  """Loads ``'digits'`` (embedded, default 16x16) or any TFDS image dataset by name."""
  if name == 'digits':
    return load_digits(image_size or 16)
  return load_tfds(name, data_dir=data_dir, image_size=image_size)


__all__ = ['Dataset', 'Scenario', 'UnlearnSplit', 'load_dataset', 'load_digits', 'load_tfds',
           'make_split', 'parse_scenario']
