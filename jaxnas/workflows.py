"""What one trial does in each workflow: train, compress, optionally retrain, and score.

  baseline: objective = float accuracy (compression is measured too, and applied to the best
            architecture after the search);
  compress: train, prune + quantize, score the served int8 model without further training;
  retrain:  like compress, then post-compression training (QAT with fixed masks) and score.

The objective is measured on the validation split, and so is everything that selects (the
pruner's reports). The test split is scored once, at the end of a trial, for the float model
and the final served int8 model; the sampler never sees it.
"""

import collections
import dataclasses
import os
import threading
import time
from typing import Callable, Optional

import jax
import numpy as np

from jaxnas import (checkpoints, data, distributed, input_pipeline, progress, pruning,
                    quantization, stats, tokenizer, train)
from jaxnas.models import Architecture, BertClassifier, count_params, init_params

WORKFLOWS = ('baseline', 'compress', 'retrain')


@dataclasses.dataclass
class Experiment:
  """Everything a trial needs that does not depend on the architecture."""
  config: object
  tokenizer: object
  train_split: input_pipeline.EncodedSplit
  validation_split: input_pipeline.EncodedSplit
  test_split: input_pipeline.EncodedSplit
  trainer: train.Trainer
  num_classes: int
  engine: object  # The quantization engine (see quantization.py).
  # This process's own stop request; `trainer.stop_requested` is the one all processes agree on.
  stop_requested: Callable[[], bool] = lambda: False
  label_names: tuple = ()  # The data's labels of class ids 0, 1, ... (data.Splits).

  def data_record(self) -> dict:
    """What a saved model needs to be scored on its own splits again, and its class names."""
    return {'config': self.config.data.to_dict(), 'label_names': list(self.label_names)}

  def model_settings(self) -> dict:
    return {'vocab_size': self.tokenizer.get_vocab_size(),
            'max_length': self.config.tokenizer.max_length, 'num_classes': self.num_classes,
            'dropout_rate': self.config.model.dropout_rate,
            'attention_dropout_rate': self.config.model.attention_dropout_rate,
            'dtype': self.config.model.dtype}

  def compression_settings(self) -> dict:
    """The numerics (the engine's `describe()`) and pruning every compressed model gets."""
    cfg = self.config.compression
    return {'numerics': self.engine.describe(), 'weight_sparsity': cfg.weight_sparsity,
            'prune_scope': cfg.prune_scope, 'activation_sparsity': cfg.activation_sparsity,
            'activation_prune_scope': cfg.activation_prune_scope,
            'retrain_epochs': cfg.retrain_epochs}

  def build_model(self, arch: Architecture) -> BertClassifier:
    return BertClassifier(arch, **self.model_settings())

  def with_seed(self, seed: int) -> 'Experiment':
    """The same data and splits with another model-init, dropout, data-order and sampler
    seed (a repeat of a study)."""
    if seed == self.config.seed:
      return self
    config = self.config.copy_and_resolve_references()
    config.seed = seed
    return dataclasses.replace(self, config=config, trainer=self.trainer.with_seed(seed))


def load_data(data_config, announce: bool = True) -> data.Splits:
  """`data.load_splits`, saying what it loads and what it found (a hub download or a large
  file takes a while, and a run should not start in silence)."""
  if announce:
    progress.say(f'data: loading {data.source_text(data_config)}')
  splits = data.load_splits(data_config)
  if announce:
    sizes = {name: len(getattr(splits, name)) for name in ('train', 'validation', 'test')}
    progress.say(f'data: {sizes["train"]:,} training, {sizes["validation"]:,} validation and '
                 f'{sizes["test"]:,} test examples; classes {", ".join(splits.label_names)}')
  return splits


def prepare_experiment(config, tokenizer_path: str = '', show_progress: bool = True,
                       stop_requested=lambda: False, devices=None,
                       splits: data.Splits | None = None) -> Experiment:
  """Loads (unless `splits` are given) and tokenizes the data, with a saved tokenizer when
  `tokenizer_path` is given. The trainer's mesh spans `devices` (default: all)."""
  if splits is None:
    splits = load_data(config.data, announce=show_progress)
  if tokenizer_path:
    tok = tokenizer.load_tokenizer(tokenizer_path)
  else:
    tok = tokenizer.get_tokenizer(config.tokenizer, data.texts_of(splits.train),
                                  splits.description,
                                  announce=progress.say if show_progress else None)
  encode = lambda split: input_pipeline.EncodedSplit(
      tokenizer.encode(tok, data.texts_of(split)), data.labels_of(split).astype(np.int32))
  train_split, validation_split, test_split = (
      encode(splits.train), encode(splits.validation), encode(splits.test))
  buckets = input_pipeline.bucket_lengths([len(ids) for ids in train_split.token_ids],
                                          config.tokenizer.max_length, config.data.num_buckets)
  trainer = train.Trainer(config.train.batch_size, config.train.eval_batch_size, buckets,
                          seed=config.seed, mesh=train.make_mesh(devices),
                          show_progress=show_progress,
                          stop_requested=distributed.agreed(stop_requested))
  return Experiment(config, tok, train_split, validation_split, test_split, trainer,
                    len(splits.label_names),
                    quantization.get_engine(config.compression.quant_engine,
                                            config.compression.fixed_point,
                                            config.compression.int8_dot), stop_requested,
                    splits.label_names)


@dataclasses.dataclass
class TrainedModel:
  model: BertClassifier
  params: object


def _phase_checkpoints(exp: Experiment, checkpoint_dir: str, phase: str):
  if not checkpoint_dir:
    return None
  return checkpoints.TrainingCheckpoints(os.path.join(checkpoint_dir, phase),
                                         exp.config.train.checkpoint_every_steps)


def steps_per_trial(exp: Experiment, workflow: str) -> dict:
  """Training steps of a trial that runs to its end: `float`, and `QAT` for `retrain`."""
  steps = {'float': exp.trainer.num_steps(exp.train_split, exp.config.train.epochs)}
  if workflow == 'retrain':
    steps['QAT'] = exp.trainer.num_steps(exp.train_split, exp.config.compression.retrain_epochs)
  return steps


def train_float(exp: Experiment, arch: Architecture, checkpoint_dir: str = '',
                report: Optional[Callable[[int, float], None]] = None) -> tuple[TrainedModel, dict]:
  """Trains a new model; every `config.search.report_every_steps` steps, `report(step, eval
  accuracy)` is called (a pruner behind it may stop the trial by raising)."""
  config = exp.config
  model = exp.build_model(arch)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  params = init_params(model, init_rng)
  num_steps = exp.trainer.num_steps(exp.train_split, config.train.epochs)
  state = train.create_train_state(model, params, config.train, num_steps, dropout_rng,
                                   sharding=exp.trainer.replicated)
  every = config.search.report_every_steps

  def after_step(state):
    if report is not None and every and int(state.step) % every == 0:
      report(int(state.step), exp.trainer.evaluate(
          model.apply, {'params': state.params}, exp.validation_split,
          'validation (pruner)')['accuracy'])

  start = time.perf_counter()
  state, losses, start_step = exp.trainer.fit(
      state, exp.train_split, config.train.epochs, 'train',
      _phase_checkpoints(exp, checkpoint_dir, 'float'), after_step)
  jax.block_until_ready(state.params)
  train_seconds = time.perf_counter() - start
  trained = TrainedModel(model, state.params)
  validation, test = score_float(exp, trained, exp.validation_split), score_float(exp, trained)
  record = {'float_validation_accuracy': validation['accuracy'],
            'n_params': count_params(state.params),
            'float_model_bytes': quantization.tree_bytes(state.params),
            'train_seconds': train_seconds,
            'eval_seconds': validation['seconds'] + test['seconds'],
            'train_losses': losses, 'resumed_from_step': {'float': start_step}}
  return trained, record, test


def score_float(exp: Experiment, trained: TrainedModel, split=None) -> dict:
  """Metrics of the float model on `split` (the test split by default)."""
  split = exp.test_split if split is None else split
  name = 'test' if split is exp.test_split else 'validation'
  return exp.trainer.evaluate(trained.model.apply, {'params': trained.params}, split,
                              f'{name} float')


@dataclasses.dataclass
class CompressedModel:
  model: BertClassifier  # The float model with the configured activation pruning.
  params: object  # Float parameters with pruned weights exactly zero.
  masks: dict
  int8: dict  # The stored int8 form (quantization engine's `convert`).
  accuracy: float  # Of the served int8 model, on the validation split.
  latency: dict  # Of the served int8 model on this device, while scored (Trainer.latency).
  eval_seconds: float  # The scoring evaluation's wall time, its compilation included.


def prune(exp: Experiment, trained: TrainedModel) -> tuple[BertClassifier, dict, dict]:
  """The configured pruning of `trained`: (its model with activation pruning, its weights
  with the magnitude masks applied, the masks)."""
  cfg = exp.config.compression
  masks = pruning.magnitude_masks(trained.params, cfg.weight_sparsity, cfg.prune_scope)
  model = trained.model.clone(activation_sparsity=cfg.activation_sparsity,
                              activation_prune_scope=cfg.activation_prune_scope)
  return model, train.apply_masks(trained.params, masks), masks


def compress(exp: Experiment, trained: TrainedModel) -> CompressedModel:
  """Prune (masks from the trained weights), then quantize; scores the served int8 model."""
  return _quantize_and_score(exp, *prune(exp, trained), 'validation int8')


def post_compression_training(exp: Experiment, compressed: CompressedModel,
                              checkpoint_dir: str = '') -> tuple[CompressedModel, dict]:
  """QAT with the masks held fixed, then convert and score the served int8 model again.

  Returns the retrained model and a record: `retrain_seconds` (QAT's training loop, its
  compilation included) and `resumed_from_step` (0 for a fresh start).
  """
  cfg, config = exp.config.compression, exp.config
  qat_model = exp.engine.training_model(compressed.model)
  num_steps = exp.trainer.num_steps(exp.train_split, cfg.retrain_epochs)
  train_config = config.train.copy_and_resolve_references()
  train_config.learning_rate = cfg.retrain_learning_rate
  dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  state = train.create_train_state(qat_model, compressed.params, train_config, num_steps,
                                   dropout_rng, masks=compressed.masks,
                                   sharding=exp.trainer.replicated)
  start = time.perf_counter()
  state, _, start_step = exp.trainer.fit(state, exp.train_split, cfg.retrain_epochs,
                                         'retrain (QAT)',
                                         _phase_checkpoints(exp, checkpoint_dir, 'retrain'))
  jax.block_until_ready(state.params)
  record = {'retrain_seconds': time.perf_counter() - start, 'resumed_from_step': start_step}
  retrained = _quantize_and_score(exp, compressed.model, state.params, compressed.masks,
                                  'validation int8 retrained')
  return retrained, record


def _quantize_and_score(exp, model, params, masks, description) -> CompressedModel:
  int8 = exp.engine.convert(model, params)
  metrics = score_served_int8(exp, model, int8, exp.validation_split, description)
  return CompressedModel(model, params, masks, int8, metrics['accuracy'],
                         metrics['latency'], metrics['seconds'])


def score_served_int8(exp: Experiment, model: BertClassifier, int8: dict, split=None,
                      description: str = 'test int8') -> dict:
  """Accuracy and latency of the served int8 form of `model` on `split` (default: test)."""
  return exp.trainer.evaluate(exp.engine.serving_apply(model), int8,
                              exp.test_split if split is None else split,
                              description, time_batches=True,
                              int8_dots=exp.engine.int8_dots)


def test_record(metrics: dict, prefix: str = '') -> dict:
  """`test_accuracy` and its 95% Wilson interval from one model's test metrics."""
  correct = metrics['correct']
  return {f'{prefix}test_accuracy': metrics['accuracy'],
          f'{prefix}test_accuracy_interval': stats.wilson_interval(int(correct.sum()),
                                                                   len(correct))}


def compression_record(compressed: CompressedModel) -> dict:
  return {'int8_validation_accuracy': compressed.accuracy,
          'activation_sparsity': compressed.model.activation_sparsity,
          'activation_prune_scope': compressed.model.activation_prune_scope,
          'sparsity': pruning.measured_sparsity(compressed.params)['overall'],
          'model_bytes': quantization.tree_bytes(compressed.int8),
          # latency_ms_per_example (the median), its _iqr, latency_batches, latency_batch_size.
          **{f'latency_{key}': value for key, value in compressed.latency.items()}}


def use_compilation_cache(cache_dir: str):
  """Persists every compiled program in `cache_dir`, so reruns and resumed searches load
  them: a trial compiles dozens of small programs, which JAX by default does not keep (< 1 s)."""
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(cache_dir))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


class CompileClock:
  """Compilation while the context is open, from JAX's monitoring events: `seconds` spent
  tracing, lowering and compiling (or loading from the persistent cache), `xla_seconds` the
  XLA part alone (what a cache hit replaces by a read), and `cache_events` counts the
  persistent cache's events (hits, misses). Only this thread's compilations count (trials run
  side by side compile in threads of their own)."""

  XLA_EVENT = '/jax/core/compile/backend_compile_duration'
  EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
            '/jax/core/compile/jaxpr_to_mlir_module_duration', XLA_EVENT)

  def __enter__(self):
    self.seconds, self.xla_seconds, self.cache_events = 0.0, 0.0, collections.Counter()
    self._thread = threading.get_ident()
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def _on_duration(self, event: str, duration: float, **kwargs):
    del kwargs
    if event in self.EVENTS and threading.get_ident() == self._thread:
      self.seconds += duration
      self.xla_seconds += duration if event == self.XLA_EVENT else 0.0

  def _on_event(self, event: str, **kwargs):
    del kwargs
    if event.startswith('/jax/compilation_cache/') and threading.get_ident() == self._thread:
      self.cache_events[event.rsplit('/', 1)[-1]] += 1

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_duration_listener(self._on_duration)
    jax.monitoring.unregister_event_listener(self._on_event)


def run_trial(exp: Experiment, arch: Architecture, workflow: str, checkpoint_dir: str = '',
              report: Optional[Callable[[int, float], None]] = None):
  """Runs one trial; returns (objective value, record of measurements, final models).

  With `checkpoint_dir`, each training phase checkpoints there and resumes from it. Pruning
  and conversion are deterministic functions of the trained weights, so they are recomputed.
  `report` receives the eval accuracy during float training (see `train_float`). The record
  holds `trial_seconds` (wall time) and `compile_seconds` (the part of it spent compiling)
  next to `train_seconds` and `retrain_seconds` (the float and QAT training loops) and
  `eval_seconds` (the scoring evaluations), each with its compilation included.
  """
  start = time.perf_counter()
  with CompileClock() as compile_clock:
    objective, record, trained, compressed = _run_trial(exp, arch, workflow, checkpoint_dir,
                                                        report)
  record['compile_seconds'] = compile_clock.seconds
  record['trial_seconds'] = time.perf_counter() - start
  return objective, record, trained, compressed


def _run_trial(exp: Experiment, arch: Architecture, workflow: str, checkpoint_dir: str = '',
               report: Optional[Callable[[int, float], None]] = None):
  trained, record, float_test = train_float(exp, arch, checkpoint_dir, report)
  compressed = compress(exp, trained)
  record.update(compression_record(compressed), numerics=exp.engine.describe())
  record['eval_seconds'] += compressed.eval_seconds
  if workflow == 'retrain':
    record['int8_validation_accuracy_before_retrain'] = compressed.accuracy
    compressed, retrain_record = post_compression_training(exp, compressed, checkpoint_dir)
    record['resumed_from_step']['retrain'] = retrain_record.pop('resumed_from_step')
    record.update(retrain_record, **compression_record(compressed))
    record['eval_seconds'] += compressed.eval_seconds
  int8_test = score_served_int8(exp, compressed.model, compressed.int8)
  record['eval_seconds'] += int8_test['seconds']
  if workflow == 'baseline':
    objective, test = record['float_validation_accuracy'], float_test
  else:
    objective, test = compressed.accuracy, int8_test
  record.update(validation_accuracy=objective, **test_record(test),
                **test_record(float_test, 'float_'), **test_record(int8_test, 'int8_'),
                n_validation=len(exp.validation_split), n_test=len(exp.test_split),
                test_correct=stats.pack_correct(test['correct']))
  return objective, record, trained, compressed


def compress_and_score(exp: Experiment, trained: TrainedModel, retrain: bool) -> dict:
  """Compresses `trained` and scores the served int8 model on validation and test, and with
  `retrain` also after post-compression training (keys `retrained_...`)."""
  scores = lambda compressed: {
      **compression_record(compressed),
      **test_record(score_served_int8(exp, compressed.model, compressed.int8), 'int8_')}
  compressed = compress(exp, trained)
  record = scores(compressed)
  if retrain:
    retrained, _ = post_compression_training(exp, compressed)
    record.update({f'retrained_{k}': v for k, v in scores(retrained).items()})
  return record


def compare_engines(exp: Experiment, trained: TrainedModel,
                    engines=quantization.INT8_ENGINES, retrain: bool = False) -> dict:
  """Compresses one trained model with each quantization engine and scores it as served.

  Pruning masks depend on the trained weights only, so every engine quantizes the same pruned
  model and the engines alone differ. With `retrain`, each engine also runs its own
  post-compression training (QAT from the same start) and is scored again.
  """
  results = {**test_record(score_float(exp, trained), 'float_'),
             'float_model_bytes': quantization.tree_bytes(trained.params), 'engines': {}}
  for name in engines:
    engine_exp = dataclasses.replace(exp, engine=quantization.get_engine(
        name, int8_dot=exp.config.compression.int8_dot))
    results['engines'][name] = compress_and_score(engine_exp, trained, retrain)
  return results
