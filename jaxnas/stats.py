"""How far an accuracy can be trusted: intervals, paired tests, the majority-class rate.

An accuracy measured on n examples is a binomial proportion. Its 95% interval is Wilson's
score interval (good coverage at small n and near 0 or 1, unlike the normal approximation).
Two models scored on the same examples are compared with the exact McNemar test, which looks
only at the examples where exactly one of them is right.
"""

import math

import numpy as np

Z_95 = 1.959963984540054  # Two-sided 95% quantile of the standard normal.


def wilson_interval(correct: int, n: int, z: float = Z_95) -> list[float]:
  """Wilson's score interval [low, high] of the proportion correct / n."""
  if n <= 0:
    return [0.0, 1.0]
  p = correct / n
  center = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  # Contains p even where rounding puts it a hair outside (at p = 0 or 1).
  return [max(0.0, min(p, center - half)), min(1.0, max(p, center + half))]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
  """Exact two-sided McNemar test of two models' per-example correctness on the same examples.

  Returns `only_a` (examples only model A gets right), `only_b`, and `p_value`: the
  probability, were both models equally accurate, of a split of the `only_a + only_b`
  discordant examples at least this uneven (binomial with p = 1/2).
  """
  correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if correct_a.shape != correct_b.shape:
    raise ValueError(f'paired test of different example sets: {correct_a.shape} vs '
                     f'{correct_b.shape}')
  only_a = int(np.sum(correct_a & ~correct_b))
  only_b = int(np.sum(~correct_a & correct_b))
  discordant = only_a + only_b
  tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
  p_value = min(1.0, 2 * tail / 2 ** discordant) if discordant else 1.0
  return {'only_a': only_a, 'only_b': only_b, 'p_value': p_value}


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
