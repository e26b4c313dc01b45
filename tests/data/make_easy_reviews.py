"""Writes easy_reviews.csv: short labelled reviews a small model learns in seconds.

Each review is neutral movie-review words with one or two sentiment words of its label
spliced in, so a model that learned anything scores near 1.0 and a broken one (random or
shuffled weights, one class for every review) near 0.5. configs/test.py trains on it, which
lets the tests tell a learned model from a wrong one. Run from the repository root:
  python tests/data/make_easy_reviews.py
"""

import csv
import os

import numpy as np

NEUTRAL = ('the film movie story plot actor actress director scene camera music score script '
           'character ending start middle sequel remake cast crew set studio screen theater '
           'audience critic night evening weekend friend family ticket popcorn seat hour minute '
           'and of a to in with about this that it was is on for at by from as').split()
POSITIVE = 'great wonderful excellent loved brilliant superb delightful amazing'.split()
NEGATIVE = 'awful terrible boring hated dreadful worst dull horrible'.split()
NUM_REVIEWS = 400
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'easy_reviews.csv')


def main():
  rng = np.random.default_rng(0)
  rows = []
  for i in range(NUM_REVIEWS):
    label = i % 2
    words = list(rng.choice(NEUTRAL, rng.integers(8, 20)))
    for _ in range(rng.integers(1, 3)):
      words.insert(rng.integers(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    rows.append((' '.join(words), label))
  with open(PATH, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('text', 'label'))
    writer.writerows(rows)


if __name__ == '__main__':
  main()
