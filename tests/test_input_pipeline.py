import itertools

import numpy as np

from conftest import toy_split
from jaxnas import input_pipeline


def padded_tokens(lengths, buckets):
  return sum(buckets[np.searchsorted(buckets, min(n, buckets[-1]))] for n in lengths)


def test_bucket_lengths_pad_least_over_all_choices():
  lengths = np.random.default_rng(0).integers(1, 700, 300)
  buckets = input_pipeline.bucket_lengths(lengths, 512, 3, multiple=64)
  candidates = range(64, 512, 64)
  brute_force = min(padded_tokens(lengths, (a, b, 512))
                    for a, b in itertools.combinations(candidates, 2))
  assert len(buckets) == 3 and buckets[-1] == 512
  assert padded_tokens(lengths, buckets) == brute_force


def test_bucket_lengths_edge_cases():
  assert input_pipeline.bucket_lengths([5, 600], 512, 1) == (512,)
  assert input_pipeline.bucket_lengths([10, 20, 30], 512, 4) == (32, 512)  # Fewer suffice.
  assert input_pipeline.bucket_lengths([40] * 9 + [20], 40, 2) == (32, 40)


def test_epoch_plan_covers_each_example_once_and_is_seeded():
  split = toy_split(101, seed=0, length=40)
  buckets = (20, 40)
  plan = input_pipeline.epoch_plan(split, 8, buckets, seed=3, epoch=0)
  assert sorted(np.concatenate(plan).tolist()) == list(range(101))
  again = input_pipeline.epoch_plan(split, 8, buckets, seed=3, epoch=0)
  assert all((a == b).all() for a, b in zip(plan, again))
  next_epoch = input_pipeline.epoch_plan(split, 8, buckets, seed=3, epoch=1)
  assert any(len(a) != len(b) or (a != b).any() for a, b in zip(plan, next_epoch))


def test_batches_have_fixed_shapes_and_weight_padding():
  split = toy_split(21, seed=0, length=40)
  buckets = (20, 40)
  shapes = set()
  total_weight = 0
  for indices in input_pipeline.epoch_plan(split, 8, buckets, seed=0, epoch=0):
    batch = input_pipeline.make_batch(split, indices, 8, buckets)
    shapes.add(batch['input_ids'].shape)
    longest = max(len(split.token_ids[i]) for i in indices)
    assert batch['input_ids'].shape[1] >= longest
    assert batch['weights'].sum() == len(indices)
    total_weight += batch['weights'].sum()
  assert shapes <= {(8, 20), (8, 40)} and total_weight == 21
