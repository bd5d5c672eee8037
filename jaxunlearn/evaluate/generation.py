"""Generation metrics: the Frechet distance between feature statistics (FID).

``FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``, in float64. The trace of
the matrix square root is computed as the sum of the square roots of the eigenvalues of
the symmetric ``S_1^(1/2) S_2 S_1^(1/2)`` (the same eigenvalues as ``S_1 S_2``), which
needs no non-symmetric ``sqrtm`` and no complex parts to discard; ``tests/test_generation.py``
checks it against pytorch-fid's scipy formula.

Features: any ``[N, D]`` array. :class:`InceptionFeatures` gives the standard ones, the
pool-3 features of pytorch-fid's Inception-v3 (:mod:`jaxunlearn.models.inception`), with
weights converted from pytorch-fid's file on disk; the generation job on the 8x8 digits
uses its own classifier's features by default (Inception sees 8x8 digits blown up to
299x299, far from anything it was trained on) and Inception with ``--fid-inception``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.parallel import SINGLE, Parallel


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


class InceptionFeatures:
  """FID's Inception pool-3 features ``[N, 2048]`` of ``[N, H, W, C]`` images in
  ``[0, 1]`` (C 1 or 3, any size: resized to 299 as pytorch-fid does), one compiled
  program per batch shape.

  pytorch-fid reads images from PNG files, so its inputs are quantized to 8 bits;
  ``quantize=True`` (the default) does the same, so that FIDs match its numbers.

      features = InceptionFeatures.from_file('pt_inception-2015-12-05-6726825d.pth')
      fid = fid_from_features(features(real), features(fake))
  """

  def __init__(self, model, variables, batch_size: int = 50, quantize: bool = True,
               parallel: Parallel = SINGLE):
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    # With ``parallel``, each batch (rounded up to a multiple of the devices) is split.
    self.batch_size = -(-batch_size // parallel.size) * parallel.size
    self.variables, self.quantize, self._parallel = variables, quantize, parallel
    self._apply = parallel.batched(lambda v, x: model.apply(v, x), per_example=True)

  @classmethod
  def from_file(cls, path, **kwargs) -> 'InceptionFeatures':
    from jaxunlearn.convert.pytorch_fid import load_fid_inception
    return cls(*load_fid_inception(path), **kwargs)

  def __call__(self, images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
      raise ValueError(f'InceptionFeatures takes [N, H, W, 1 or 3] images, got {x.shape}')
    if not np.isfinite(x).all():
      raise ValueError('images contain NaN or inf')
    x = np.clip(x, 0.0, 1.0)
    if self.quantize:
      x = np.round(x * 255.0) / 255.0
    out = []
    for i in range(0, len(x), self.batch_size):
      chunk = x[i:i + self.batch_size]
      n = len(chunk)
      if n < self.batch_size < len(x):  # pad the last batch: one shape, one compile
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *x.shape[1:]),
                                                x.dtype)])
      out.append(self._apply(self.variables, chunk))
    return self._parallel.rows(out, len(x))  # (across processes: one gather for all)


def fid_from_features(features_a, features_b) -> float:
  """FID between two sets of ``[N, D]`` features (e.g. real and generated images)."""
  return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
