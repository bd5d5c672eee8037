"""Forget scenarios: which training examples to forget, as a pure function of
(dataset, scenario, seed).

Scenarios are strings, as on the command line:

- ``class:K`` — forget every training example of class K. Class K's test examples also
  leave the test set, so TA measures the remaining classes (the class-wise protocol of
  SalUn and SFR-on).
- ``random:P`` — forget P percent of the training set, drawn uniformly without
  replacement with the given seed; the test set is unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxunlearn.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class Scenario:
  """A parsed forget scenario: ``kind`` is 'class' or 'random'."""

  kind: str
  value: float

  def __str__(self):
    return f'{self.kind}:{self.value:g}'


@dataclasses.dataclass(frozen=True)
class UnlearnSplit:
  """Sorted index arrays: ``forget`` and ``retain`` into the training set (disjoint, together
  all of it), ``test`` into the test set."""

  forget: np.ndarray
  retain: np.ndarray
  test: np.ndarray


def parse_scenario(spec: str) -> Scenario:
  """Parses 'class:K' or 'random:P'; raises ValueError naming the accepted forms."""
  kind, sep, value = str(spec).partition(':')
  forms = "use 'class:K' (forget class K) or 'random:P' (forget P% of the training set)"
  if not sep or kind not in ('class', 'random'):
    raise ValueError(f'unknown forget scenario {spec!r}: {forms}')
  try:
    number = float(value)
  except ValueError:
    raise ValueError(f'forget scenario {spec!r} has no number after the colon: {forms}') from None
  if not np.isfinite(number):
    raise ValueError(f'forget scenario {spec!r}: the number must be finite; {forms}')
  if kind == 'class' and number != int(number):
    raise ValueError(f"forget scenario {spec!r}: the class must be an integer, e.g. 'class:3'")
  return Scenario(kind, number)


def make_split(dataset: Dataset, scenario: str | Scenario, seed: int = 0) -> UnlearnSplit:
  """Splits ``dataset`` into forget / retain / test indices for a scenario.

  Args:
    dataset: the dataset.
    scenario: 'class:K' or 'random:P' (or a parsed :class:`Scenario`).
    seed: selects the random subset for 'random:P'; 'class:K' ignores it.

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
