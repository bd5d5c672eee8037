"""The Frechet distance against pytorch-fid's scipy formula."""

import numpy as np
import pytest
from scipy import linalg

from jaxunlearn.evaluate.generation import (feature_statistics, fid_from_features,
                                            frechet_distance)


def _scipy_fid(mu1, s1, mu2, s2):
  """pytorch-fid's calculate_frechet_distance, written from its formula."""
  covmean = linalg.sqrtm(s1.dot(s2))
  if not np.isfinite(covmean).all():
    offset = np.eye(s1.shape[0]) * 1e-6
    covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
  covmean = covmean.real
  diff = mu1 - mu2
  return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize('dim, n, seed', [(2, 50, 0), (16, 200, 1), (64, 500, 2), (128, 100, 3)])
def test_frechet_distance_matches_scipy_on_random_statistics(dim, n, seed):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
  b = rng.normal(size=(n, dim)) * 2 + 0.5
  stats_a, stats_b = feature_statistics(a), feature_statistics(b)
  expected = _scipy_fid(*stats_a, *stats_b)
  assert frechet_distance(*stats_a, *stats_b) == pytest.approx(expected, rel=1e-6, abs=1e-6)
  assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_errors_are_clear():
  x = np.random.default_rng(0).normal(size=(300, 8))
  assert abs(fid_from_features(x, x)) < 1e-8
  # Rank-deficient covariances (fewer samples than dimensions) stay finite.
  few = np.random.default_rng(1).normal(size=(5, 32))
  assert np.isfinite(fid_from_features(few, few + 1.0))
  with pytest.raises(ValueError, match='statistics do not match'):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match='at least 2 feature vectors'):
    feature_statistics(np.zeros((1, 3)))
