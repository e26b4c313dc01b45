"""How far an accuracy can be trusted: intervals, paired tests, the majority-class rate.

An accuracy measured on n examples is a binomial proportion. Its 95% interval is Wilson's
score interval (good coverage at small n and near 0 or 1, unlike the normal approximation).
Two models scored on the same examples are compared with the exact McNemar test, which looks
only at the examples where exactly one of them is right; several such tests in one run are
corrected with Holm's step-down procedure.

Two models are one draw each of their searches (one seed); whether one search (sampler,
workflow) beats another is a question across seeds: the best models' test accuracies, paired
by seed, are compared with Wilcoxon's signed-rank test (two groups) or Friedman's test with
Nemenyi's post-hoc test (three or more), as Demšar (2006, JMLR 7) recommends for comparing
classifiers over data sets. Both are exact permutation tests here: with a handful of seeds
their p-values cannot go below (k!)^-(n-1) for k groups and n seeds, which the results say.
"""

import itertools
import math

import numpy as np
import scipy.stats

RESAMPLES = 9999  # Permutations beyond this many are sampled at random (seeded).


def wilson_interval(correct: int, n: int) -> list[float]:
  """Wilson's score interval [low, high] of the proportion correct / n, at 95%."""
  if n <= 0:
    return [0.0, 1.0]
  interval = scipy.stats.binomtest(correct, n).proportion_ci(method='wilson')
  return [float(interval.low), float(interval.high)]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
  """Exact two-sided McNemar test of two models' per-example correctness on the same examples.

  Returns `only_a` (examples only model A gets right), `only_b`, and `p_value`: the
  probability, were both models equally accurate, of a split of the `only_a + only_b`
  discordant examples at least this uneven (binomial with p = 1/2); None when there is no
  discordant example, so nothing to test.
  """
  correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if correct_a.shape != correct_b.shape:
    raise ValueError(f'paired test of different example sets: {correct_a.shape} vs '
                     f'{correct_b.shape}')
  only_a = int(np.sum(correct_a & ~correct_b))
  only_b = int(np.sum(~correct_a & correct_b))
  p_value = scipy.stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else None
  return {'only_a': only_a, 'only_b': only_b,
          'p_value': None if p_value is None else float(p_value)}


def holm(p_values) -> list[float]:
  """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m is
  multiplied by m - i + 1 and made no smaller than the one before it. Flagging adjusted
  p < alpha keeps the chance of any false flag among the m tests below alpha."""
  p_values = np.asarray(p_values, float)
  order = np.argsort(p_values, kind='stable')
  steps = np.maximum.accumulate((len(p_values) - np.arange(len(p_values))) * p_values[order])
  adjusted = np.empty_like(p_values)
  adjusted[order] = np.minimum(1.0, steps)
  return adjusted.tolist()


def smallest_p(groups: int, seeds: int) -> float:
  """The smallest p-value the exact across-seed tests can give: every seed ranks the groups
  the same way, one of the groups! orders, out of groups!^seeds equally likely under no
  difference (no ties)."""
  return float(math.factorial(groups)) ** (1 - seeds)


def seeds_needed(groups: int, alpha: float) -> int:
  """The fewest seeds at which the across-seed test can reach p < alpha at all."""
  return next(n for n in itertools.count(2) if smallest_p(groups, n) < alpha)


def across_seeds(accuracies: dict, alpha: float) -> dict:
  """Whether groups differ across seeds: `accuracies` maps each group to its best models' test
  accuracies, one per seed in the same seed order (k >= 2 groups, n >= 2 seeds).

  Two groups: Wilcoxon's signed-rank test. More: Friedman's test on the ranks of the groups
  within each seed, then for each pair Nemenyi's test (family-wise, from the studentized
  range), a pair flagged only when Friedman's test is too. Both tests are exact over the
  within-seed permutations, up to `RESAMPLES` of them (then sampled at random).
  """
  names = list(accuracies)
  table = np.array([accuracies[name] for name in names], float)  # groups x seeds.
  k, n = table.shape
  ranks = scipy.stats.rankdata(-table, axis=0)  # Rank 1: the best group of a seed.
  result = {'groups': names, 'seeds': n, 'mean_ranks': dict(zip(names, ranks.mean(1).tolist())),
            'smallest_attainable_p': smallest_p(k, n), 'seeds_needed': seeds_needed(k, alpha)}
  exact = ('(exact)' if math.factorial(k) ** n <= RESAMPLES
           else f'({RESAMPLES:,} random permutations)')
  if k == 2:
    test = scipy.stats.wilcoxon(table[0], table[1], method=scipy.stats.PermutationMethod(
        n_resamples=RESAMPLES, rng=0))
    return {**result, 'test': f'Wilcoxon signed-rank {exact}', 'statistic': float(test.statistic),
            'p_value': float(test.pvalue), 'significant': bool(test.pvalue < alpha), 'pairs': []}
  if np.all(table == table[:1]):  # Every seed ties every group: nothing to rank.
    statistic, p_value = 0.0, 1.0
  else:
    friedman = lambda *groups, axis: scipy.stats.friedmanchisquare(*groups, axis=axis).statistic
    test = scipy.stats.permutation_test(tuple(table), friedman, permutation_type='samples',
                                        n_resamples=RESAMPLES, alternative='greater', rng=0)
    statistic, p_value = float(test.statistic), float(test.pvalue)
  rejected = p_value < alpha
  pairs = []
  for i, j in itertools.combinations(range(k), 2):
    p_pair = nemenyi_p(abs(ranks[i].mean() - ranks[j].mean()), k, n)
    pairs.append({'a': names[i], 'b': names[j], 'p_value': p_pair,
                  'significant': bool(rejected and p_pair < alpha)})
  return {**result, 'test': f'Friedman {exact}, Nemenyi post-hoc', 'statistic': statistic,
          'p_value': p_value, 'significant': bool(rejected), 'pairs': pairs}


def nemenyi_p(rank_difference: float, groups: int, seeds: int) -> float:
  """Nemenyi's p-value of two groups' mean ranks `rank_difference` apart: they differ at level
  alpha when the difference exceeds Demšar's critical difference q_alpha * sqrt(k (k + 1) /
  (6 n)), q_alpha being the studentized range's quantile over sqrt(2)."""
  q = rank_difference / math.sqrt(groups * (groups + 1) / (6 * seeds)) * math.sqrt(2)
  return float(scipy.stats.studentized_range.sf(q, groups, np.inf))


def majority_class_accuracy(labels: np.ndarray) -> float:
  """The accuracy of always predicting the most frequent class of `labels`."""
  return float(np.max(np.bincount(labels)) / len(labels))


def pack_correct(correct: np.ndarray) -> str:
  """Per-example correctness as a string of '0'/'1' (JSON- and Optuna-attribute-friendly)."""
  return ''.join('1' if c else '0' for c in np.asarray(correct, bool))


def unpack_correct(text: str) -> np.ndarray:
  return np.frombuffer(text.encode(), np.uint8) == ord('1')


def interval_text(record: dict, key: str) -> str:
  """`record[key + '_accuracy']` with its interval, '0.812 [0.795, 0.829]' ('' if absent)."""
  if record.get(f'{key}_accuracy') is None:
    return ''
  low, high = record[f'{key}_accuracy_interval']
  return f'{record[f"{key}_accuracy"]:.3f} [{low:.3f}, {high:.3f}]'
