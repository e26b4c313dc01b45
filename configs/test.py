"""A tiny config for tests: 200/100 reviews of 32 tokens, one epoch, checkpoints every 4 steps.

A trial takes 15 to 60 s on a 2-core CPU, most of it XLA compiling (README: configs).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.train_size = 200
  config.data.test_size = 100
  config.data.num_buckets = 1
  config.tokenizer.vocab_size = 500
  config.tokenizer.max_length = 32
  config.train.batch_size = 16
  config.train.eval_batch_size = 50
  config.train.epochs = 1
  config.train.checkpoint_every_steps = 4
  config.search.n_trials = 3
  config.search.space.num_layers = (2, 4)
  return config
