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


def bucket_lengths(max_length: int, num_buckets: int, min_length: int = 16) -> tuple[int, ...]:
  """Bucket lengths halving down from max_length, e.g. (64, 128, 256, 512)."""
  lengths = [max_length]
  while len(lengths) < num_buckets and lengths[0] // 2 >= min_length:
    lengths.insert(0, lengths[0] // 2)
  return tuple(lengths)


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

