"""Many-model evaluation: the challenge's per-example epsilons and score, and U-LiRA."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxunlearn.evaluate import strong


def test_logit_scaled_confidence_by_hand():
  logits = np.array([[0.0, math.log(3.0)], [5.0, 5.0]])
  got = strong.logit_scaled_confidence(logits, np.array([1, 0]))
  np.testing.assert_allclose(got, [math.log(3.0), 0.0], atol=1e-12)
  # [models, examples, classes] logits with one label per example.
  stacked = strong.logit_scaled_confidence(np.stack([logits, logits]), np.array([1, 0]))
  np.testing.assert_allclose(stacked, [got, got])
  # Saturated softmax stays finite (the 1e-45 floor), and large.
  assert 90 < strong.logit_scaled_confidence(np.array([[200.0, 0.0]]), np.array([0]))[0] < 200


def test_identical_distributions_score_best():
  rng = np.random.default_rng(0)
  conf = rng.normal(size=(16, 30))
  out = strong.challenge_score(conf, conf.copy())
  np.testing.assert_array_equal(out['epsilons'], 0.0)
  assert out['forget_quality'] == 1.0


def test_disjoint_distributions_score_worst():
  rng = np.random.default_rng(1)
  unlearned = rng.uniform(0, 1, size=(16, 5))
  retrained = rng.uniform(10, 11, size=(16, 5))
  out = strong.challenge_score(unlearned, retrained)
  np.testing.assert_array_equal(out['epsilons'], strong.EPSILON_CAP)
  assert out['forget_quality'] == 0.0


def test_epsilon_of_interleaved_distributions_by_hand():
  """pos = {1, 2, 3, 4}, neg = {0.5, 1.5, 2.5, 3.5}: the best rules (a threshold in
  (2.5, 3] or (1.5, 2], or an interval such as [1.5, 2.5]) have FPR 1/4 and FNR 1/2 (or
  the mirror image), rules with one zero rate are dropped, so
  epsilon = log(1 - delta - 1/2) - log(1/4) = log 2 - O(delta), bucket 1, 1/2 point."""
  pos = np.array([1.0, 2.0, 3.0, 4.0])
  neg = np.array([0.5, 1.5, 2.5, 3.5])
  want = math.log(1 - strong.DELTA - 0.5) - math.log(0.25)
  assert strong.example_epsilon(pos, neg) == pytest.approx(want, abs=1e-12)
  for u, r in ((pos, neg), (neg, pos)):  # which side is Retrain does not matter
    out = strong.challenge_score(u[:, None], r[:, None])
    assert out['epsilons'][0] == pytest.approx(want, abs=1e-12)
    assert out['points'][0] == 0.5 and out['forget_quality'] == 0.5


def test_peaky_distribution_gets_the_cap():
  retrained = np.linspace(-3, 3, 16)[:, None]
  unlearned = 1.0 + np.linspace(0, 0.05, 16)[:, None]  # < 1% of Retrain's range
  assert strong.challenge_epsilons(unlearned, retrained)[0] == strong.EPSILON_CAP


def _brute_force_epsilon(pos, neg, delta=strong.DELTA):
  """The reference's rule families as explicit [models, rules] comparisons."""
  pr, nr = np.ptp(pos), np.ptp(neg)
  eps = []
  peaky, other = (neg, pos) if pr >= nr else (pos, neg)
  width = min(pr, nr)
  lo, hi = peaky.min() + width - 2, peaky.max() + 2
  rights = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
  for r in rights:
    for left in np.linspace(r - width - 2, r - width + 2, 400):
      tpr = np.mean((left <= peaky) & (peaky <= r))
      fpr = np.mean((left <= other) & (other <= r))
      eps.append((fpr, 1 - tpr))
  both = np.concatenate([pos, neg])
  for t in np.linspace(both.min(), both.max(), int(np.ceil(np.ptp(both) * 100))):
    eps.append((np.mean(neg >= t), 1 - np.mean(pos >= t)))
  best = 0.0
  for fpr, fnr in eps:
    if fpr == 0 and fnr == 0:
      return strong.EPSILON_CAP
    if fpr * fnr == 0:
      continue
    best = max(best, math.log(1 - delta - fpr) - math.log(fnr) if 1 - delta - fpr > 0 else 0,
               math.log(1 - delta - fnr) - math.log(fpr) if 1 - delta - fnr > 0 else 0)
  return best


def test_sorted_rates_equal_explicit_comparisons():
  rng = np.random.default_rng(2)
  for shift, scale in ((0.3, 1.0), (1.0, 0.5), (2.0, 2.0)):
    pos = rng.normal(shift, 1.0, size=8)
    neg = rng.normal(0.0, scale, size=8)
    if np.median(pos) < np.median(neg):
      pos, neg = neg, pos
    assert strong.example_epsilon(pos, neg) == pytest.approx(_brute_force_epsilon(pos, neg),
                                                             abs=1e-9)


def test_bucket_points_and_utility_adjustment():
  # 16 models: ceil(log 15) = 3, so 6 buckets of 0.5.
  eps = [0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 50.0]
  np.testing.assert_allclose(strong.bucket_points(eps, 16),
                             [1, 1, 0.5, 0.25, 2.0 ** -5, 0, 0])
  conf = np.random.default_rng(3).normal(size=(16, 4))
  out = strong.challenge_score(conf, conf, unlearned_accuracy={'RA': [90, 92], 'TA': [80, 80]},
                               retrained_accuracy={'RA': [100, 100], 'TA': [100, 100]})
  assert out['score'] == pytest.approx(1.0 * 0.91 * 0.8)
  with pytest.raises(ValueError, match='both'):
    strong.challenge_score(conf, conf, unlearned_accuracy={'RA': [1], 'TA': [1]})


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match='same examples'):
    strong.challenge_epsilons(np.zeros((4, 3)), np.zeros((4, 2)))
  with pytest.raises(ValueError, match='at least 2'):
    strong.ulira(np.zeros((1, 3)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match='NaN'):
    strong.challenge_epsilons(np.full((4, 3), np.nan), np.zeros((4, 3)))


def test_ulira_score_by_hand():
  """One example, 3 + 3 models, per-example variances. Target unlearned model 0 (c = 0):
  its shadows are unlearned {1, 2} (median 1.5, variance 0.5) and retrained {10, 11, 12}
  (median 11, variance 1)."""
  u, r = np.array([[0.0], [1.0], [2.0]]), np.array([[10.0], [11.0], [12.0]])
  out = strong.ulira(u, r, per_example_variance=True)
  log_n = lambda x, m, v: -0.5 * (math.log(2 * math.pi * v) + (x - m) ** 2 / v)  # noqa: E731
  assert out['scores_unlearned'][0, 0] == pytest.approx(log_n(0, 1.5, 0.5) - log_n(0, 11, 1))
  # Retrained target 11: unlearned shadows all three (median 1, var 1), retrained {10, 12}.
  assert out['scores_retrained'][1, 0] == pytest.approx(log_n(11, 1, 1) - log_n(11, 11, 2))
  assert out['auc'] == 1.0 and out['accuracy'] == 1.0 and out['tpr_at_1%_fpr'] == 1.0
  np.testing.assert_array_equal(out['example_accuracy'], [1.0])


def test_ulira_identical_distributions_are_a_coin_flip():
  rng = np.random.default_rng(4)
  means = rng.normal(0, 3, size=200)  # examples differ, models of both kinds alike
  u = means + rng.normal(size=(16, 200))
  r = means + rng.normal(size=(16, 200))
  out = strong.ulira(u, r)
  assert 0.45 < out['auc'] < 0.55 and 0.4 < out['accuracy'] < 0.6
  shifted = strong.ulira(u + 1.5, r)  # per-example shift: the attack finds it
  assert shifted['auc'] > 0.8


def test_roc_auc_and_tpr_at_fpr():
  rng = np.random.default_rng(5)
  scores = np.round(rng.normal(size=300), 1)  # ties
  labels = rng.integers(0, 2, size=300)
  assert strong.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
  s = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
  lab = np.array([1, 0, 1, 1, 0, 0])
  assert strong.tpr_at_fpr(s, lab, 0.0) == pytest.approx(1 / 3)  # above every negative
  assert strong.tpr_at_fpr(s, lab, 0.34) == pytest.approx(1.0)   # one negative allowed
