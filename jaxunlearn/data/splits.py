"""Forget scenarios: which training examples to forget, as a pure function of
(dataset, scenario, seed).

Scenarios are strings, as on the command line:

- ``class:K`` — forget every training example of class K. Class K's test examples also
  leave the test set, so TA measures the remaining classes (the class-wise protocol of
  SalUn and SFR-on).
- ``random:P`` — forget P percent of the training set, drawn uniformly without
  replacement with the given seed; the test set is unchanged.
- ``indices:FILE`` — forget the training examples whose indices (0-based, into the
  training set as loaded) ``FILE`` lists: a ``.npy`` integer array, or text with one index
  per line (or separated by commas or spaces; ``#`` starts a comment). Empty, duplicate,
  negative or out-of-range indices are errors. The same set for every seed; the test set is
  unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxunlearn.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class Scenario:
  """A parsed forget scenario: ``kind`` is 'class', 'random' or 'indices' (then ``path``
  names the file and ``indices`` holds its sorted indices; ``value`` is their count)."""

  kind: str
  value: float
  path: str | None = None
  indices: tuple | None = dataclasses.field(default=None, repr=False)

  def __str__(self):
    return f'indices:{self.path}' if self.kind == 'indices' else f'{self.kind}:{self.value:g}'


def read_indices(path: str) -> np.ndarray:
  """The training-set indices listed in ``path`` (``.npy``, or text), checked: integers,
  at least one, none negative, none twice. Raises ValueError saying what is wrong."""
  from pathlib import Path
  where = f"forget scenario 'indices:{path}'"
  file = Path(path)
  if not file.is_file():
    raise ValueError(f'{where}: no such file (give a .npy integer array or a text file of '
                     'training-set indices)')
  if file.suffix == '.npy':
    try:
      raw = np.load(file, allow_pickle=False)
    except ValueError as e:
      raise ValueError(f'{where}: not a numeric .npy array ({e})') from None
    if raw.ndim != 1:
      raise ValueError(f'{where}: the array must be 1-D, got shape {raw.shape}')
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
      if not (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw))):
        raise ValueError(f'{where}: indices must be integers, got dtype {raw.dtype}')
    values = raw.astype(np.int64)
  else:
    words = []
    for line in file.read_text().splitlines():
      words += line.split('#')[0].replace(',', ' ').split()
    try:
      values = np.array([int(w) for w in words], np.int64)
    except ValueError:
      bad = next(w for w in words if not w.lstrip('-').isdigit())
      raise ValueError(f'{where}: {bad!r} is not an integer index') from None
  if values.size == 0:
    raise ValueError(f'{where}: the file lists no indices; the forget set needs at least one')
  if values.min() < 0:
    raise ValueError(f'{where}: negative index {int(values.min())}; indices count from 0')
  unique, counts = np.unique(values, return_counts=True)
  if np.any(counts > 1):
    twice = unique[counts > 1]
    shown = ', '.join(map(str, twice[:5].tolist())) + (', ...' if twice.size > 5 else '')
    raise ValueError(f'{where}: {twice.size} indices appear more than once ({shown}); list '
                     'each example once')
  return unique


@dataclasses.dataclass(frozen=True)
class UnlearnSplit:
  """Sorted index arrays: ``forget`` and ``retain`` into the training set (disjoint, together
  all of it), ``test`` into the test set."""

  forget: np.ndarray
  retain: np.ndarray
  test: np.ndarray


def parse_scenario(spec: str) -> Scenario:
  """Parses 'class:K', 'random:P' or 'indices:FILE' (reading and checking the file);
  raises ValueError naming the accepted forms."""
  kind, sep, value = str(spec).partition(':')
  if str(spec) != str(spec).strip():
    raise ValueError(f'forget scenario {spec!r} has leading or trailing spaces: write '
                     f'{str(spec).strip()!r}')
  forms = ("use 'class:K' (forget class K), 'random:P' (forget P% of the training set) or "
           "'indices:FILE' (forget the training examples a .npy or text file lists)")
  if not sep or kind not in ('class', 'random', 'indices'):
    raise ValueError(f'unknown forget scenario {spec!r}: {forms}')
  if kind == 'indices':
    indices = read_indices(value)
    return Scenario('indices', float(indices.size), value, tuple(indices.tolist()))
  try:
    number = float(value)
  except ValueError:
    raise ValueError(f'forget scenario {spec!r} has no number after the colon: {forms}') from None
  if not np.isfinite(number):
    raise ValueError(f'forget scenario {spec!r}: the number must be finite; {forms}')
  if kind == 'class' and number != int(number):
    raise ValueError(f"forget scenario {spec!r}: the class must be an integer, e.g. 'class:3'")
  if kind == 'class' and number < 0:
    raise ValueError(f'forget scenario {spec!r}: classes are numbered from 0')
  if kind == 'random' and not 0 < number < 100:
    raise ValueError(f'forget scenario {spec!r}: the percentage must lie in the open interval '
                     f'(0, 100), got {number:g}')
  return Scenario(kind, number)


def make_split(dataset: Dataset, scenario: str | Scenario, seed: int = 0) -> UnlearnSplit:
  """Splits ``dataset`` into forget / retain / test indices for a scenario.

  Args:
    dataset: the dataset.
    scenario: 'class:K', 'random:P' or 'indices:FILE' (or a parsed :class:`Scenario`).
    seed: selects the random subset for 'random:P'; the others ignore it.

  Returns:
    An :class:`UnlearnSplit`. The same arguments always give the same split.

  Raises:
    ValueError: unknown class, percentage outside (0, 100), or an empty forget or
      retain set; the message names the valid range.
  """
  sc = parse_scenario(scenario) if isinstance(scenario, str) else scenario
  n = len(dataset.y_train)
  test = np.arange(len(dataset.y_test))
  if sc.kind == 'class':
    k = int(sc.value)
    if not 0 <= k < dataset.num_classes:
      raise ValueError(f"forget scenario '{sc}': class {k} does not exist in "
                       f'{dataset.name}; classes are 0..{dataset.num_classes - 1}')
    forget_mask = dataset.y_train == k
    test = np.flatnonzero(dataset.y_test != k)
  elif sc.kind == 'indices':
    indices = np.asarray(sc.indices, np.int64)
    if indices.max() >= n:
      out = indices[indices >= n]
      raise ValueError(f"forget scenario '{sc}': {out.size} indices lie beyond the "
                       f'{n} training examples of {dataset.name} (valid: 0..{n - 1}; e.g. '
                       f'{int(out[0])}): are they indices into this dataset\'s training set?')
    forget_mask = np.zeros(n, bool)
    forget_mask[indices] = True
  else:
    p = sc.value
    if not 0 < p < 100:
      raise ValueError(f"forget scenario '{sc}': the percentage must lie in the open "
                       f'interval (0, 100), got {p:g}')
    count = int(round(p / 100 * n))
    forget_mask = np.zeros(n, bool)
    forget_mask[np.random.default_rng(seed).choice(n, size=count, replace=False)] = True
  forget, retain = np.flatnonzero(forget_mask), np.flatnonzero(~forget_mask)
  if forget.size == 0:
    hint = ('classes are 0..%d' % (dataset.num_classes - 1) if sc.kind == 'class' else
            f'{dataset.name} has {n} training examples: choose P >= {100 / n:.3g}')
    raise ValueError(f"forget set is empty: the scenario '{sc}' selects no examples; {hint}")
  if retain.size == 0:
    raise ValueError(f"retain set is empty: the scenario '{sc}' forgets every training "
                     f'example of {dataset.name}; forget fewer')
  if test.size == 0:
    raise ValueError(f"test set is empty under scenario '{sc}'")
  return UnlearnSplit(forget=forget, retain=retain, test=test)
