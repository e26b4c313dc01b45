"""The fixed shapes the bench times, and the model, optimizer and batches both sides run."""

import dataclasses

import ml_collections
import numpy as np

from jaxnas import input_pipeline, models
from jaxnas.models import Architecture
from jaxnas.tokenizer import PAD_ID


@dataclasses.dataclass(frozen=True)
class Shape:
  arch: Architecture
  batch: int
  length: int
  steps: int  # Timed per round.


SHAPES = {
    'small': Shape(Architecture(2, 2, 128, 512), batch=8, length=512, steps=6),
    'large': Shape(Architecture(4, 4, 256, 1024), batch=32, length=256, steps=2),
}
DROPOUT = 0.1
LEARNING_RATE = 5e-5
LAB_ACTIVATION_SPARSITY = 0.5  # configs/lab2.py's: each Dense input's smallest half zeroed.


def data_config(train_size: int):
  """The lab's setting (configs/lab2.py: max_length 512, batch 8, 4 buckets) on embedded data."""
  from configs import lab2  # pylint: disable=g-import-not-at-top
  config = lab2.get_config()
  config.data.source = 'embedded'
  config.data.train_size = train_size
  config.data.test_size = 500
  config.model.dropout_rate = config.model.attention_dropout_rate = DROPOUT
  config.compilation_cache_dir = ''
  return config


def jax_model(arch: Architecture, vocab_size: int, dtype: str) -> models.BertClassifier:
  return models.BertClassifier(arch, vocab_size, max_length=512, dropout_rate=DROPOUT,
                               attention_dropout_rate=DROPOUT, dtype=dtype)


def optimizer_config():
  """HF Trainer's defaults in the lab: AdamW, linear decay, no warmup or decay, clip 1.0."""
  return ml_collections.ConfigDict(dict(learning_rate=LEARNING_RATE, warmup_steps=0,
                                        weight_decay=0.0, grad_clip=1.0))


def fixed_batches(split: input_pipeline.EncodedSplit, shape: Shape, count: int) -> list[dict]:
  """`count` [batch, length] batches of real reviews, truncated to `length` tokens."""
  truncated = input_pipeline.EncodedSplit([ids[:shape.length] for ids in split.token_ids],
                                          split.labels)
  return [input_pipeline.make_batch(truncated, np.arange(i * shape.batch, (i + 1) * shape.batch)
                                    % len(split), shape.batch, (shape.length,))
          for i in range(count)]


def real_tokens(batches) -> int:
  return int(sum(np.sum(b['input_ids'] != PAD_ID) for b in batches))
