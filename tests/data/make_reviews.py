"""Writes the tests' two data files: short labelled reviews a small model learns in seconds.

Each review is neutral movie-review words with one or two sentiment words of its label
spliced in.
- easy_reviews.csv: a model that learned anything scores near 1.0 and a broken one (random or
  shuffled weights, one class for every review) near 0.5. configs/test.py trains on it, which
  lets the tests tell a learned model from a wrong one.
- noisy_reviews.csv: the same kind of reviews with 20% of the labels flipped, so a model that
  learned scores about 0.8 and no better, and its validation and test accuracies differ: the
  tests that must tell the splits apart use it (on the easy reviews every split scores 1.0).
Run from the repository root:
  python tests/data/make_reviews.py
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
NOISY_LABEL_FRACTION = 0.2
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def review(rng, label):
  words = list(rng.choice(NEUTRAL, rng.integers(8, 20)))
  for _ in range(rng.integers(1, 3)):
    words.insert(rng.integers(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
  return ' '.join(words)


def easy_reviews():
  rng = np.random.default_rng(0)
  return [(review(rng, i % 2), i % 2) for i in range(NUM_REVIEWS)]


def noisy_reviews():
  rng = np.random.default_rng(1)
  rows = []
  for label in rng.integers(0, 2, NUM_REVIEWS):
    text = review(rng, label)
    rows.append((text, int(label) ^ int(rng.random() < NOISY_LABEL_FRACTION)))
  return rows


def write(name, rows):
  with open(os.path.join(DIRECTORY, name), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('text', 'label'))
    writer.writerows(rows)


if __name__ == '__main__':
  write('easy_reviews.csv', easy_reviews())
  write('noisy_reviews.csv', noisy_reviews())
