"""Evaluating one model on one split, and comparing it with Retrain."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxunlearn.data import Dataset, UnlearnSplit
from jaxunlearn.evaluate import metrics as M
from jaxunlearn.parallel import SINGLE, Parallel
from jaxunlearn.step import predict


@dataclasses.dataclass(frozen=True)
class Outputs:
  """Softmax outputs of a model on the forget, retain and (split's) test sets."""

  forget: np.ndarray
  retain: np.ndarray
  test: np.ndarray


def model_outputs(model, variables, dataset: Dataset, split: UnlearnSplit,
                  parallel: Parallel = SINGLE) -> Outputs:
  """Eval-mode probabilities on D_f, D_r and the test set of ``split`` (each batch split
  over ``parallel``'s devices)."""
  probs = lambda x: M.softmax(predict(model, variables, x, parallel=parallel))
  train = probs(dataset.x_train)
  return Outputs(forget=train[split.forget], retain=train[split.retain],
                 test=probs(dataset.x_test[split.test]))


def evaluate(outputs: Outputs, dataset: Dataset, split: UnlearnSplit,
             reference: Outputs | None = None) -> dict:
  """The protocol's metrics (percent) for one model; divergences if ``reference`` is given.

  Returns:
    ``{'UA', 'RA', 'TA', 'MIA', 'MIA_entropy'}`` plus ``'KL'`` and ``'JS'`` (nats, mean over
    D_f, against the reference model's outputs) when ``reference`` is not None.
  """
  y_f, y_r = dataset.y_train[split.forget], dataset.y_train[split.retain]
  y_t = dataset.y_test[split.test]
  # SalUn's shadow members: the first |test| retain examples in index order.
  n_shadow = min(len(y_t), len(y_r))
  result = {
      'UA': 100.0 - M.accuracy(outputs.forget, y_f),
      'RA': M.accuracy(outputs.retain, y_r),
      'TA': M.accuracy(outputs.test, y_t),
      'MIA': M.mia_efficacy(outputs.retain[:n_shadow], y_r[:n_shadow], outputs.test, y_t,
                            outputs.forget, y_f),
      'MIA_entropy': M.mia_entropy_efficacy(outputs.retain, outputs.test, outputs.forget),
  }
  if reference is not None:
    result['KL'] = M.kl_divergence(reference.forget, outputs.forget)
    result['JS'] = M.js_divergence(reference.forget, outputs.forget)
  return result
