"""Intervals and paired tests, against values computed by hand, published tables and brute
force."""

import itertools
import math
import time

import numpy as np
import pytest
import scipy.stats

from jaxnas import stats


def test_wilson_interval_matches_the_formula_and_stays_in_range():
  # 81 of 100: center (0.81 + 1.92/100) / 1.0384, half-width 1.96 * sqrt(0.1539/100 +
  # 3.84/40000) / 1.0384 (z = 1.96): [0.7222, 0.8749].
  low, high = stats.wilson_interval(81, 100)
  assert (low, high) == pytest.approx((0.7222, 0.8749), abs=1e-4)
  assert stats.wilson_interval(0, 10)[0] == 0.0
  assert stats.wilson_interval(10, 10)[1] == 1.0
  # 0 of 10: the upper bound z^2 / (n + z^2) = 3.8415 / 13.8415, not the degenerate [0, 0].
  assert stats.wilson_interval(0, 10)[1] == pytest.approx(0.27753, abs=1e-5)
  narrow = stats.wilson_interval(1620, 2000)
  assert narrow[1] - narrow[0] == pytest.approx(2 * 0.0172, abs=1e-3)  # 2,000 reviews.


def _pairs(only_a, only_b, both=50, neither=40):
  """Correctness of two models on the reviews of a 2x2 table."""
  a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, bool)
  b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, bool)
  return a, b


def test_exact_mcnemar_on_known_tables():
  a, b = _pairs(9, 1)
  result = stats.mcnemar_exact(a, b)
  # 9 vs 1 discordant: p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024.
  assert (result['only_a'], result['only_b']) == (9, 1)
  assert result['p_value'] == pytest.approx(22 / 1024)
  assert stats.mcnemar_exact(b, a)['p_value'] == result['p_value']
  # 25 vs 10: 2 * sum_{k<=10} C(35, k) / 2^35.
  assert stats.mcnemar_exact(*_pairs(25, 10))['p_value'] == pytest.approx(
      2 * sum(math.comb(35, k) for k in range(11)) / 2 ** 35)
  assert stats.mcnemar_exact(*_pairs(5, 5))['p_value'] == 1.0
  assert stats.mcnemar_exact(a, a)['p_value'] is None  # No discordant review: no test.
  with pytest.raises(ValueError, match='different example sets'):
    stats.mcnemar_exact(a, b[:10])


def test_exact_mcnemar_is_fast_and_near_the_chi_square_at_25000_discordant_reviews():
  start = time.perf_counter()
  result = stats.mcnemar_exact(*_pairs(12_600, 12_400))
  assert time.perf_counter() - start < 1.0  # The hand-written sum took 149 s.
  chi_square = scipy.stats.chi2.sf((200 - 1) ** 2 / 25_000, 1)  # With continuity correction.
  assert result['p_value'] == pytest.approx(chi_square, abs=2e-3)
  assert result['p_value'] == pytest.approx(0.208, abs=1e-3)


def test_holm_adjusts_step_down_and_keeps_the_order():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> made
  # non-decreasing: 0.02, 0.03, 0.06, 0.06. Bonferroni would give 0.04, 0.16, 0.12, 0.02.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.3, 0.8]) == pytest.approx([0.6, 0.8])
  assert stats.holm([0.02]) == [0.02]


def _friedman_statistic(table):
  """Friedman's chi-square from its textbook formula (no ties): 12 / (n k (k + 1)) * sum of
  squared rank sums - 3 n (k + 1)."""
  k, n = table.shape
  rank_sums = scipy.stats.rankdata(table, axis=0).sum(1)
  return 12 / (n * k * (k + 1)) * np.sum(rank_sums ** 2) - 3 * n * (k + 1)


def test_friedman_p_is_exact_over_all_within_seed_permutations():
  table = np.array([[0.81, 0.80, 0.83, 0.79], [0.80, 0.82, 0.81, 0.78],
                    [0.78, 0.79, 0.80, 0.80]])  # 3 groups x 4 seeds, no ties within a seed.
  observed = _friedman_statistic(table)
  permuted = [_friedman_statistic(np.stack([column[list(order)] for column, order in
                                            zip(table.T, orders)], 1))
              for orders in itertools.product(itertools.permutations(range(3)), repeat=4)]
  exact = np.mean(np.array(permuted) >= observed - 1e-9)  # 6^4 = 1,296 permutations.
  result = stats.across_seeds(dict(zip('abc', table)), 0.05)
  assert result['statistic'] == pytest.approx(observed)
  assert result['p_value'] == pytest.approx(exact)
  assert result['mean_ranks'] == pytest.approx({'a': 1.5, 'b': 2.0, 'c': 2.5})


def test_across_seeds_needs_every_seed_to_agree_at_three_seeds_and_cannot_reach_at_two():
  agree = {'grid': [0.82, 0.81, 0.83], 'random': [0.80, 0.80, 0.81], 'tpe': [0.79, 0.78, 0.80]}
  result = stats.across_seeds(agree, 0.05)
  assert result['p_value'] == pytest.approx(1 / 36)  # 6 of 6^3 orderings are as extreme.
  assert result['smallest_attainable_p'] == pytest.approx(1 / 36)
  assert result['significant']
  pairs = {(c['a'], c['b']): c for c in result['pairs']}
  assert pairs['grid', 'tpe']['significant']  # Mean ranks 1 and 3.
  assert not pairs['grid', 'random']['significant']  # Mean ranks 1 and 2.
  two = stats.across_seeds({name: values[:2] for name, values in agree.items()}, 0.05)
  assert two['p_value'] == pytest.approx(1 / 6) and not two['significant']
  assert two['smallest_attainable_p'] == pytest.approx(1 / 6) and two['seeds_needed'] == 3
  assert not any(c['significant'] for c in two['pairs'])
  # At level 0.15 Nemenyi's p for grid vs tpe (0.11) passes, Friedman's (1/6) does not: no pair
  # is flagged without the omnibus test.
  loose = stats.across_seeds({name: values[:2] for name, values in agree.items()}, 0.15)
  assert min(c['p_value'] for c in loose['pairs']) < 0.15
  assert not loose['significant'] and not any(c['significant'] for c in loose['pairs'])
  tied = stats.across_seeds({name: [0.8, 0.8] for name in agree}, 0.05)
  assert tied['p_value'] == 1.0 and tied['statistic'] == 0.0


def test_across_seeds_of_two_groups_is_the_exact_wilcoxon_signed_rank_test():
  better = [0.82, 0.81, 0.90, 0.85, 0.70, 0.60]
  worse = [0.79, 0.80, 0.80, 0.80, 0.60, 0.50]
  result = stats.across_seeds({'a': better, 'b': worse}, 0.05)
  assert result['test'].startswith('Wilcoxon') and result['pairs'] == []
  assert result['p_value'] == pytest.approx(2 / 2 ** 6)  # All 6 differences one way.
  assert result['significant'] and result['seeds_needed'] == 6
  five = stats.across_seeds({'a': better[:5], 'b': worse[:5]}, 0.05)
  assert five['p_value'] == pytest.approx(2 / 2 ** 5) and not five['significant']
  assert five['smallest_attainable_p'] == pytest.approx(1 / 16)
  # One small reversal in 8 seeds: signed ranks give 2 * P(W <= 1) = 2 * 2 / 256, where a sign
  # test (7 of 8) would give 2 * 9 / 256 = 0.07.
  differences = np.array([-0.001, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07])
  reversal = stats.across_seeds({'a': 0.8 + differences, 'b': np.full(8, 0.8)}, 0.05)
  assert reversal['p_value'] == pytest.approx(4 / 256) and reversal['significant']


def test_power_bound_and_nemenyi_against_demsar_tables():
  assert [stats.smallest_p(3, n) for n in (2, 3)] == pytest.approx([1 / 6, 1 / 36])
  assert [stats.seeds_needed(k, 0.05) for k in (2, 3, 4)] == [6, 3, 2]
  # Demšar (2006), table 5(a): q_0.05 = 2.343, 2.569, 2.728 for k = 3, 4, 5; a mean-rank
  # difference of q * sqrt(k (k + 1) / 6n) is the critical difference, p = 0.05.
  for k, q in ((3, 2.343), (4, 2.569), (5, 2.728)):
    critical = q * math.sqrt(k * (k + 1) / (6 * 10))
    assert stats.nemenyi_p(critical, k, 10) == pytest.approx(0.05, abs=5e-4)


def test_majority_class_and_correctness_round_trip():
  assert stats.majority_class_accuracy(np.array([0, 1, 1, 1])) == 0.75
  correct = np.array([True, False, True])
  assert stats.pack_correct(correct) == '101'
  assert stats.unpack_correct('101').tolist() == correct.tolist()
