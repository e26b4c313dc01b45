"""One-shot search (`--workflow=oneshot`) over a space larger than the default's corner.

  python launch.py --workflow=oneshot --config=configs/oneshot.py --workdir=runs/oneshot

The default's data, tokenizer, training and compression settings (so its test reviews and its
`retrain` job are the reference), searching layers {2,4}, heads {2,4,8}, hidden {128,192,256},
intermediate {512,768,1024} and every Linear/Identity choice (README: One-shot search).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.search.space.num_layers = (2, 4)
  config.search.space.num_heads = (2, 4, 8)
  config.search.space.hidden_size = (128, 192, 256)
  config.search.space.intermediate_size = (512, 768, 1024)
  # 1.5 epochs (375 steps): the first half trains the largest sub-network alone, then the
  # sandwich. One epoch of sandwich steps from the start left every sub-network at the
  # majority class (README: One-shot search).
  config.oneshot.epochs = 1.5  # oneshot.largest_only = 0.5 (configs/default.py).
  # 200 sub-networks scored, the best 2 fine-tuned; 12 trained standalone for the ranking check.
  config.search.n_trials = 200
  config.oneshot.top_k = 2
  return config
