"""Generation metrics: the Frechet distance between feature statistics (FID).

``FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``, in float64. The trace of
the matrix square root is computed as the sum of the square roots of the eigenvalues of
the symmetric ``S_1^(1/2) S_2 S_1^(1/2)`` (the same eigenvalues as ``S_1 S_2``), which
needs no non-symmetric ``sqrtm`` and no complex parts to discard; ``tests/test_generation.py``
checks it against pytorch-fid's scipy formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance (ddof=1, as pytorch-fid) of ``[N, D]`` features, in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'need at least 2 feature vectors [N, D], got shape {f.shape}')
  return f.mean(axis=0), np.cov(f, rowvar=False)


@jax.jit
def _frechet(mu1, s1, mu2, s2):
  w, v = jnp.linalg.eigh((s1 + s1.T) / 2)
  root1 = (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T
  inner = root1 @ s2 @ root1
  eig = jnp.linalg.eigvalsh((inner + inner.T) / 2)
  diff = mu1 - mu2
  return diff @ diff + jnp.trace(s1) + jnp.trace(s2) - 2 * jnp.sum(jnp.sqrt(jnp.clip(eig, 0.0)))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The Frechet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or \
      sigma1.shape != (mu1.shape[0],) * 2:
    raise ValueError(f'statistics do not match: means {mu1.shape} and {mu2.shape}, '
                     f'covariances {sigma1.shape} and {sigma2.shape}')
  with jax.enable_x64(True):
    args = [jnp.asarray(a, jnp.float64) for a in (mu1, sigma1, mu2, sigma2)]
    return float(_frechet(*args))


def fid_from_features(features_a, features_b) -> float:
  """FID between two sets of ``[N, D]`` features (e.g. real and generated images)."""
  return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
