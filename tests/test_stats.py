"""Intervals and paired tests, against values computed by hand."""

import numpy as np
import pytest

from jaxnas import stats


def test_wilson_interval_matches_the_formula_and_stays_in_range():
  # 81 of 100: center (0.81 + 1.92/100) / 1.0384, half-width 1.96 * sqrt(0.1539/100 +
  # 3.84/40000) / 1.0384 (z = 1.96): [0.7222, 0.8749].
  low, high = stats.wilson_interval(81, 100)
  assert (low, high) == pytest.approx((0.7222, 0.8749), abs=1e-4)
  assert stats.wilson_interval(0, 10)[0] == 0.0
  assert stats.wilson_interval(10, 10)[1] == 1.0
  assert 0 < stats.wilson_interval(0, 10)[1] < 0.35  # Not the degenerate [0, 0].
  narrow = stats.wilson_interval(1620, 2000)
  assert narrow[1] - narrow[0] == pytest.approx(2 * 0.0172, abs=1e-3)  # 2,000 reviews.


def test_exact_mcnemar_counts_discordant_pairs():
  a = np.array([1] * 50 + [1] * 9 + [0] * 1 + [0] * 40, bool)
  b = np.array([1] * 50 + [0] * 9 + [1] * 1 + [0] * 40, bool)
  result = stats.mcnemar_exact(a, b)
  # 9 vs 1 discordant: p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024.
  assert (result['only_a'], result['only_b']) == (9, 1)
  assert result['p_value'] == pytest.approx(22 / 1024)
  assert stats.mcnemar_exact(a, a)['p_value'] == 1.0  # No discordant pair.
  assert stats.mcnemar_exact(a, b)['p_value'] == stats.mcnemar_exact(b, a)['p_value']
  with pytest.raises(ValueError, match='different example sets'):
    stats.mcnemar_exact(a, b[:10])


def test_majority_class_and_correctness_round_trip():
  assert stats.majority_class_accuracy(np.array([0, 1, 1, 1])) == 0.75
  correct = np.array([True, False, True])
  assert stats.pack_correct(correct) == '101'
  assert stats.unpack_correct('101').tolist() == correct.tolist()
