"""Test setup: never touch the network; share a compilation cache within the run."""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
# Tests run tiny models for a few steps: compile time dominates, so compile with less
# optimization (the programs stay numerically the same up to float reassociation).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0').strip()

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxnas import input_pipeline


XLA_CACHE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '.pytest_cache', 'xla'))


def pytest_configure(config):
  del config
  jax.config.update('jax_compilation_cache_dir', XLA_CACHE)


@pytest.fixture
def test_config(tmp_path):
  from configs import test  # pylint: disable=g-import-not-at-top
  config = test.get_config()
  config.tokenizer.cache_dir = str(tmp_path / 'tokenizers')
  config.compilation_cache_dir = XLA_CACHE
  return config


def toy_split(num_examples: int, seed: int, length: int = 12) -> input_pipeline.EncodedSplit:
  """A learnable task: label 1 iff token 7 appears, else token 8 appears ([CLS]=2, [SEP]=3)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, num_examples).astype(np.int32)
  token_ids = []
  for label in labels:
    body = rng.integers(10, 40, rng.integers(4, length - 2))
    body[rng.integers(len(body))] = 7 if label else 8
    token_ids.append(np.concatenate([[2], body, [3]]).astype(np.int32))
  return input_pipeline.EncodedSplit(token_ids, labels)


def train_config(**overrides) -> ConfigDict:
  return ConfigDict(dict(learning_rate=3e-3, warmup_steps=0, weight_decay=0.0, grad_clip=1.0)
                    | overrides)
