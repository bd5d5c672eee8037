"""Many-model unlearning evaluation: the NeurIPS 2023 challenge score and U-LiRA.

Both compare, *per forget example*, the outputs of N unlearned models with those of N
retrained models (exact unlearning), through the logit-scaled confidence of the true label
``log p_y - log(1 - p_y)`` (LiRA's statistic, close to Gaussian over training runs).

**Challenge forgetting quality** (Triantafillou et al., arXiv 2406.09073; the competition's
evaluation code, google-deepmind/unlearning_evaluation). For every forget example, every
decision rule of two families tells the unlearned from the retrained confidences: one
threshold (``c >= t``), and an interval ``[l, r]`` around the peakier distribution; each
rule's false positive and negative rates give an (epsilon, delta)-unlearning lower bound
``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` (delta 1e-5), and
the example's epsilon is the largest over rules, capped at 50. Rules with exactly one of
FPR, FNR zero are dropped (too few models to trust them), both zero is perfect separation
(the cap), and so is a distribution with less than 1% of the other's range (too peaky to
measure). Epsilons fall into buckets of width 0.5 worth 1, 1/2, 1/4, ... up to
``ceil(log(N - 1))`` (larger: 0); the forgetting quality F is the mean over examples
(1 = indistinguishable from Retrain), and the final score ``F * (RA_u / RA_r) *
(TA_u / TA_r)`` with accuracies averaged over the models. Thresholds are exact here: rates
at every grid point come from sorted confidences (``searchsorted``) rather than an
``[models, rules]`` comparison matrix, with the grids of the reference (100 per unit of
confidence; buffer 2). Where the reference's assertion fails (no rule survives: both
distributions the same point), the example's epsilon is 0.

**U-LiRA** (Hayes et al., arXiv 2403.01218): a per-example likelihood-ratio attack. For an
example, Gaussians are fitted to its confidences under unlearned and under retrained shadow
models; a target model's confidence is scored by ``log N(c; mu_u, s_u) - log N(c; mu_r,
s_r)``. Here every model is the target once and the others its shadows (leave-one-out), so
N + N models give 2N attacks per example without a separate shadow pool. Means are medians
(LiRA's code); the variance is per example with 64 or more shadows per side, otherwise the
within-example variance pooled over examples (LiRA's fixed-variance mode, which pools its
raw standard deviation instead; pooling within examples does not count the spread between
examples' means as noise). Reported: AUC and accuracy of the attack over all (model,
example) pairs (0.5 = Retrain-like; the accuracy thresholds the ratio at 1, equal priors),
TPR at 1% and 0.1% FPR, and per-example accuracies (how unevenly examples are protected).

Our forget set is the same for all 2N models (the challenge's setting); Hayes et al. also
resample it per shadow model. Both papers treat each method's randomness as part of the
unlearned distribution: here each unlearned model starts from its own original (seed i)
and each retrained model is trained with seed i.
"""

from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
DOUBLE_THRESHOLD_BUFFER = 2.0
BUCKET = 0.5


def logit_scaled_confidence(logits, labels) -> np.ndarray:
  """``log p_y - log(sum_{j != y} p_j)`` of ``[..., C]`` logits, in float64 (the
  challenge's and LiRA's numerically stable form, 1e-45 added inside the logs)."""
  z = np.asarray(logits, np.float64)
  labels = np.broadcast_to(np.asarray(labels), z.shape[:-1])  # e.g. [examples] for all models
  z = z - z.max(axis=-1, keepdims=True)
  p = np.exp(z)
  p /= p.sum(axis=-1, keepdims=True)
  correct = np.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
  wrong = p.sum(axis=-1) - correct
  return np.log(correct + 1e-45) - np.log(np.clip(wrong, 0.0, None) + 1e-45)


def _check(a, b, what: str):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f'{what} takes [models, examples] confidences of both kinds with the '
                     f'same examples, got {a.shape} and {b.shape}')
  if min(a.shape[0], b.shape[0]) < 2:
    raise ValueError(f'{what} needs at least 2 models of each kind, got {a.shape[0]} '
                     f'unlearned and {b.shape[0]} retrained')
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    raise ValueError(f'{what}: confidences contain NaN or inf')
  return a, b


def _rates_inside(sorted_c, lo, hi):
  """Fraction of ``sorted_c`` in ``[lo, hi]`` (element-wise over lo, hi)."""
  n = len(sorted_c)
  return (np.searchsorted(sorted_c, hi, side='right') -
          np.searchsorted(sorted_c, lo, side='left')).clip(0) / n


def _rule_epsilons(fpr, fnr, delta):
  """Per rule: inf for perfect separation, NaN (dropped) for one zero rate, else the
  (epsilon, delta) bound, clipped at 0."""
  with np.errstate(divide='ignore', invalid='ignore'):
    eps = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
  eps = np.clip(eps, 0.0, None)
  eps = np.where((fpr == 0) & (fnr == 0), np.inf, eps)
  return np.where((fpr * fnr == 0) & ~((fpr == 0) & (fnr == 0)), np.nan, eps)


def example_epsilon(pos, neg, delta: float = DELTA) -> float:
  """The challenge's epsilon for one example: ``pos`` the confidences of the side with the
  larger median, ``neg`` the other's."""
  pos, neg = np.sort(np.asarray(pos, np.float64)), np.sort(np.asarray(neg, np.float64))
  pos_range, neg_range = pos[-1] - pos[0], neg[-1] - neg[0]
  largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
  if largest > 0 and smallest / largest < 0.01:
    return EPSILON_CAP  # one side is (nearly) a point: too peaky to measure, worst case
  eps = []
  # Interval rules: "positive" is the peakier side (ties: the reference swaps).
  peaky, other = (neg, pos) if pos_range >= neg_range else (pos, neg)
  width, buf = smallest, DOUBLE_THRESHOLD_BUFFER
  lo, hi = peaky[0] + width - buf, peaky[-1] + buf
  right = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
  offsets = np.linspace(-width - buf, -width + buf, int(np.ceil(2 * buf * THRESHOLDS_PER_UNIT)))
  left = (right[:, None] + offsets[None, :]).ravel()
  right = np.repeat(right, len(offsets))
  tpr = _rates_inside(peaky, left, right)
  fpr = _rates_inside(other, left, right)
  eps.append(_rule_epsilons(fpr, 1 - tpr, delta))
  # One-threshold rules: predict positive at c >= t.
  both = np.concatenate([pos, neg])
  t = np.linspace(both.min(), both.max(), int(np.ceil((both.max() - both.min()) *
                                                       THRESHOLDS_PER_UNIT)))
  tpr = 1 - np.searchsorted(pos, t, side='left') / len(pos)
  fpr = 1 - np.searchsorted(neg, t, side='left') / len(neg)
  eps.append(_rule_epsilons(fpr, 1 - tpr, delta))
  eps = np.concatenate(eps)
  if np.all(np.isnan(eps)):
    return 0.0  # no rule tells them apart at all (the reference asserts here)
  return float(np.clip(np.nanmax(eps), 0.0, EPSILON_CAP))


def challenge_epsilons(unlearned, retrained, delta: float = DELTA) -> np.ndarray:
  """Per-example epsilons ``[examples]`` from ``[models, examples]`` logit-scaled
  confidences of unlearned and retrained models."""
  u, r = _check(unlearned, retrained, 'challenge_epsilons')
  retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
  return np.array([example_epsilon(r[:, i], u[:, i], delta) if retrain_positive[i] else
                   example_epsilon(u[:, i], r[:, i], delta) for i in range(u.shape[1])])


def bucket_points(epsilons, num_models: int) -> np.ndarray:
  """Each example's points: ``2^-k`` for epsilon in ``[k/2, (k+1)/2)``, 0 beyond
  ``ceil(log(num_models - 1))`` (what N models can resolve)."""
  if num_models < 3:
    raise ValueError(f'the challenge score needs at least 3 models per side, got {num_models}')
  buckets = int(math.ceil(math.log(num_models - 1)) / BUCKET)
  k = np.floor(np.asarray(epsilons, np.float64) / BUCKET)
  return np.where(k < buckets, 0.5 ** k, 0.0)


def challenge_score(unlearned, retrained, *, unlearned_accuracy=None,
                    retrained_accuracy=None, delta: float = DELTA) -> dict:
  """The challenge's forgetting quality, and its final score when accuracies are given.

  Args:
    unlearned, retrained: ``[models, examples]`` logit-scaled confidences on D_f.
    unlearned_accuracy, retrained_accuracy: ``{'RA': [models], 'TA': [models]}``
      (percent or fractions, the same for both), for the utility adjustment.

  Returns:
    ``{'forget_quality', 'epsilons', 'points'}`` and ``'score'`` (F * RA_u/RA_r * TA_u/TA_r)
    when accuracies are given.
  """
  eps = challenge_epsilons(unlearned, retrained, delta)
  points = bucket_points(eps, np.asarray(unlearned).shape[0])
  out = {'forget_quality': float(points.mean()), 'epsilons': eps, 'points': points}
  if (unlearned_accuracy is None) != (retrained_accuracy is None):
    raise ValueError('give the accuracies of both the unlearned and the retrained models')
  if unlearned_accuracy is not None:
    ratio = 1.0
    for key in ('RA', 'TA'):
      ref = float(np.mean(retrained_accuracy[key]))
      if ref <= 0:
        raise ValueError(f'Retrain\'s mean {key} is {ref}: the utility ratio is undefined')
      ratio *= float(np.mean(unlearned_accuracy[key])) / ref
    out['score'] = out['forget_quality'] * ratio
  return out


def _loo_stats(c, per_example: bool):
  """Leave-one-out medians ``[models, examples]`` and variances (per example or pooled)."""
  n = c.shape[0]
  keep = ~np.eye(n, dtype=bool)
  others = np.stack([c[keep[m]] for m in range(n)])  # [n, n-1, examples]
  med = np.median(others, axis=1)
  var = others.var(axis=1, ddof=1)
  if not per_example:
    var = np.broadcast_to(var.mean(axis=1, keepdims=True), var.shape)
  return med, np.maximum(var, 1e-12)


def _stats(c, per_example: bool):
  med, var = np.median(c, axis=0), c.var(axis=0, ddof=1)
  if not per_example:
    var = np.full_like(var, var.mean())
  return med, np.maximum(var, 1e-12)


def _log_normal(x, mean, var):
  return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve (ties counted half), labels 1 = positive."""
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel()
  pos, neg = scores[labels == 1], scores[labels == 0]
  order = np.sort(neg)
  below = np.searchsorted(order, pos, side='left')
  ties = np.searchsorted(order, pos, side='right') - below
  return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def tpr_at_fpr(scores, labels, fpr: float) -> float:
  """The largest TPR over thresholds whose FPR is at most ``fpr``."""
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel()
  neg = np.sort(scores[labels == 0])[::-1]
  allowed = int(np.floor(fpr * len(neg)))  # negatives that may score above the threshold
  threshold = neg[allowed] if allowed < len(neg) else -np.inf
  return float(np.mean(scores[labels == 1] > threshold))


def ulira(unlearned, retrained, per_example_variance: bool | None = None) -> dict:
  """U-LiRA with leave-one-out shadows over ``[models, examples]`` confidences.

  Returns:
    ``{'auc', 'accuracy', 'tpr_at_1%_fpr', 'tpr_at_0.1%_fpr', 'example_accuracy'
    [examples], 'scores_unlearned', 'scores_retrained'}`` (log likelihood ratios,
    positive = "unlearned").
  """
  u, r = _check(unlearned, retrained, 'ulira')
  if min(len(u), len(r)) < 3:
    raise ValueError('U-LiRA needs at least 3 models of each kind (2 shadows per side)')
  if per_example_variance is None:
    per_example_variance = min(len(u), len(r)) - 1 >= 64
  # Targets that are unlearned models: their own side fitted without them.
  mu_u_loo, var_u_loo = _loo_stats(u, per_example_variance)
  mu_r_loo, var_r_loo = _loo_stats(r, per_example_variance)
  mu_u, var_u = _stats(u, per_example_variance)
  mu_r, var_r = _stats(r, per_example_variance)
  score_u = _log_normal(u, mu_u_loo, var_u_loo) - _log_normal(u, mu_r, var_r)
  score_r = _log_normal(r, mu_u, var_u) - _log_normal(r, mu_r_loo, var_r_loo)
  scores = np.concatenate([score_u.ravel(), score_r.ravel()])
  labels = np.concatenate([np.ones(score_u.size), np.zeros(score_r.size)])
  per_example = (np.sum(score_u > 0, axis=0) + np.sum(score_r <= 0, axis=0)) / (len(u) + len(r))
  return {'auc': roc_auc(scores, labels),
          'accuracy': float(np.mean((scores > 0) == (labels == 1))),
          'tpr_at_1%_fpr': tpr_at_fpr(scores, labels, 0.01),
          'tpr_at_0.1%_fpr': tpr_at_fpr(scores, labels, 0.001),
          'example_accuracy': per_example,
          'scores_unlearned': score_u, 'scores_retrained': score_r}
