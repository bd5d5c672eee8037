"""The standard unlearning evaluation (SalUn, arXiv 2310.12508; SFR-on, arXiv 2409.19732).

All accuracy-like metrics are percentages.

- UA  = 100 - accuracy on the forget set D_f (unlearning accuracy).
- RA  = accuracy on the retain set D_r.
- TA  = accuracy on the test set (class-wise: without the forgotten class).
- MIA = MIA-Efficacy: an RBF SVC (C=3, gamma='auto') is fit to tell shadow members (the
  first ``|test|`` retain examples) from non-members (the test set) by the softmax probability
  of the true label; MIA is the percentage of D_f it predicts to be non-members.
- MIA_entropy: SFR-on's variant, logistic regression (balanced classes) on the output
  entropy, members = the whole retain set; reported as efficacy (% of D_f predicted
  non-member). SFR-on's code prints the complement, the member rate.
- Avg. Gap = mean ``|metric - Retrain's|`` over UA, RA, TA and MIA.
- KL / JS: mean over D_f of KL(p_retrain || p) and the Jensen-Shannon divergence (nats).
"""

from __future__ import annotations

import numpy as np

GAP_METRICS = ('UA', 'RA', 'TA', 'MIA')


def softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent."""
  labels = np.asarray(labels)
  if len(labels) == 0:
    raise ValueError('accuracy of an empty set is undefined')
  return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))


def true_label_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """``p[i, y_i]``, the SVC-MIA feature of SalUn's evaluation."""
  return np.take_along_axis(probs, np.asarray(labels)[:, None], axis=1)[:, 0]


def entropy(probs: np.ndarray) -> np.ndarray:
  """Shannon entropy (nats) of each row; 0 log 0 = 0."""
  p = np.asarray(probs, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _efficacy(clf, member_feat, nonmember_feat, target_feat) -> float:
  x = np.concatenate([member_feat, nonmember_feat]).reshape(-1, 1)
  y = np.concatenate([np.ones(len(member_feat)), np.zeros(len(nonmember_feat))])
  if len(np.unique(y)) < 2:
    raise ValueError('MIA needs both shadow members and non-members')
  clf.fit(x, y)
  return float(100.0 * (1.0 - clf.predict(np.reshape(target_feat, (-1, 1))).mean()))


def mia_efficacy(member_probs, member_labels, nonmember_probs, nonmember_labels,
                 target_probs, target_labels) -> float:
  """SalUn's SVC MIA-Efficacy in percent: the share of targets predicted non-member.

  Args:
    member_probs, member_labels: shadow members (SalUn: the first ``|test|`` retain examples).
    nonmember_probs, nonmember_labels: shadow non-members (the test set).
    target_probs, target_labels: the forget set.
  """
  from sklearn.svm import SVC
  return _efficacy(SVC(C=3, gamma='auto', kernel='rbf'),
                   true_label_confidence(member_probs, member_labels),
                   true_label_confidence(nonmember_probs, nonmember_labels),
                   true_label_confidence(target_probs, target_labels))


def mia_entropy_efficacy(member_probs, nonmember_probs, target_probs) -> float:
  """SFR-on's entropy MIA (balanced logistic regression) as efficacy in percent."""
  from sklearn.linear_model import LogisticRegression
  return _efficacy(LogisticRegression(class_weight='balanced', solver='lbfgs'),
                   entropy(member_probs), entropy(nonmember_probs), entropy(target_probs))


def kl_divergence(p_ref: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
  """Mean over rows of KL(p_ref || p) in nats."""
  p_ref, p = np.asarray(p_ref, np.float64), np.asarray(p, np.float64)
  terms = np.where(p_ref > 0, p_ref * (np.log(np.maximum(p_ref, eps)) - np.log(np.maximum(p, eps))), 0.0)
  return float(np.mean(np.sum(terms, axis=-1)))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
  """Mean over rows of the Jensen-Shannon divergence in nats (bounded by log 2)."""
  m = 0.5 * (np.asarray(p, np.float64) + np.asarray(q, np.float64))
  return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def avg_gap(metrics: dict, reference: dict, keys=GAP_METRICS) -> float:
  """Mean absolute difference to ``reference`` (Retrain) over ``keys``."""
  return float(np.mean([abs(metrics[k] - reference[k]) for k in keys]))


def summarize(values) -> dict:
  """``{'mean', 'std'}`` over seeds; std is the sample std (ddof=1), 0 for one seed."""
  v = np.asarray(values, np.float64)
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if v.size > 1 else 0.0}
