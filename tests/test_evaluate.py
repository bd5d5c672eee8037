import numpy as np
import pytest

from jaxunlearn.data import make_split
from jaxunlearn.evaluate import (Outputs, accuracy, avg_gap, entropy, evaluate, js_divergence,
                                 kl_divergence, mia_efficacy, mia_entropy_efficacy, summarize,
                                 true_label_confidence)


def _probs_with_confidence(conf, labels, classes=10):
  """Rows whose true-label probability is ``conf``, the rest spread evenly."""
  conf, labels = np.asarray(conf, float), np.asarray(labels)
  p = np.tile(((1 - conf) / (classes - 1))[:, None], (1, classes))
  p[np.arange(len(labels)), labels] = conf
  return p


def test_accuracy_and_confidence_hand_computed():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
  assert accuracy(logits, np.array([0, 1, 1, 1])) == 75.0
  p = np.array([[0.2, 0.8], [0.6, 0.4]])
  np.testing.assert_allclose(true_label_confidence(p, np.array([1, 1])), [0.8, 0.4])
  np.testing.assert_allclose(entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), [np.log(2), 0.0])
  with pytest.raises(ValueError, match='empty'):
    accuracy(np.zeros((0, 2)), np.zeros(0, int))


def test_mia_separable_case_is_exact():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 200)
  members = _probs_with_confidence(rng.uniform(0.9, 1.0, 200), y)
  nonmembers = _probs_with_confidence(rng.uniform(0.0, 0.3, 200), y)
  forgotten = _probs_with_confidence(np.full(50, 0.05), y[:50])   # looks unseen
  remembered = _probs_with_confidence(np.full(50, 0.97), y[:50])  # looks like training data
  args = (members, y, nonmembers, y)
  assert mia_efficacy(*args, forgotten, y[:50]) == 100.0
  assert mia_efficacy(*args, remembered, y[:50]) == 0.0
  half = np.concatenate([forgotten[:25], remembered[:25]])
  assert mia_efficacy(*args, half, np.concatenate([y[:25], y[:25]])) == 50.0


def test_mia_inseparable_case_is_near_chance():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 10, 400)
  members = _probs_with_confidence(rng.uniform(0, 1, 400), y)
  nonmembers = _probs_with_confidence(rng.uniform(0, 1, 400), y)
  targets = _probs_with_confidence(rng.uniform(0, 1, 400), y)
  eff = mia_efficacy(members, y, nonmembers, y, targets, y)
  assert 20.0 < eff < 80.0
  eff_entropy = mia_entropy_efficacy(members, nonmembers, targets)
  assert 20.0 < eff_entropy < 80.0


def test_entropy_mia_separable_case():
  sharp = np.tile(np.eye(10)[0] * 0.99 + 0.001, (100, 1))  # low entropy: members
  flat = np.full((100, 10), 0.1)                            # high entropy: non-members
  assert mia_entropy_efficacy(sharp, flat, flat[:20]) == 100.0
  assert mia_entropy_efficacy(sharp, flat, sharp[:20]) == 0.0


def test_divergences_hand_computed():
  p_ref, p = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
  assert kl_divergence(p_ref, p) == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(5))
  assert kl_divergence(p, p) == 0.0
  assert js_divergence(np.eye(2), np.eye(2)[::-1]) == pytest.approx(np.log(2))
  assert js_divergence(p, p_ref) == pytest.approx(js_divergence(p_ref, p))


def test_avg_gap_and_summary():
  ref = {'UA': 100, 'RA': 100, 'TA': 95, 'MIA': 100}
  assert avg_gap({'UA': 90, 'RA': 98, 'TA': 95, 'MIA': 80}, ref) == pytest.approx(8.0)
  assert summarize([1.0, 3.0]) == {'mean': 2.0, 'std': pytest.approx(np.sqrt(2))}
  assert summarize([4.0]) == {'mean': 4.0, 'std': 0.0}


def test_evaluate_protocol_on_handmade_outputs(toy):
  split = make_split(toy, 'class:0')  # 20 forget, 40 retain, 20 test (classes 1, 2)
  y_f, y_r = toy.y_train[split.forget], toy.y_train[split.retain]
  y_t = toy.y_test[split.test]
  onehot = lambda labels: np.eye(3)[labels] * 0.98 + 0.02 / 3
  wrong_f = onehot((y_f + 1) % 3)
  wrong_f[:2] = onehot(y_f[:2])  # 2 of 20 forget examples still right: UA = 90
  right_t = onehot(y_t)
  right_t[:5] = onehot((y_t[:5] + 1) % 3)  # TA = 75
  out = Outputs(forget=wrong_f, retain=onehot(y_r), test=right_t)
  m = evaluate(out, toy, split, reference=out)
  assert m['UA'] == pytest.approx(90.0)
  assert m['RA'] == pytest.approx(100.0)
  assert m['TA'] == pytest.approx(75.0)
  assert m['KL'] == pytest.approx(0.0, abs=1e-9) and m['JS'] == pytest.approx(0.0, abs=1e-9)
  assert 0.0 <= m['MIA'] <= 100.0 and 0.0 <= m['MIA_entropy'] <= 100.0
  assert 'KL' not in evaluate(out, toy, split)
