"""The cases that run in the bench's process: a fixed shape (`small`, `large`) and `epoch`."""

import collections
import statistics
import time

import jax
import numpy as np

from jaxnas import models, train, workflows
from jaxnas.bench import measure, torch_side
from jaxnas.bench.jax_side import JaxSide
from jaxnas.bench.shapes import DROPOUT, SHAPES, fixed_batches, jax_model, real_tokens


def fixed_shape_case(name: str, split, vocab_size: int, *, against: str, rounds: int,
                     steps: int, dtype: str, peak: float) -> dict:
  """A fixed-shape train step and eval, JAX and (optionally) torch rounds alternating: `rounds`
  of `steps` batches each (0: the shape's own), after one that warms up. `peak`: the
  machine's GEMM GFLOP/s."""
  shape = SHAPES[name]
  model = jax_model(shape.arch, vocab_size, dtype)
  params = models.init_params(model, jax.random.key(0))
  batches = fixed_batches(split, shape, steps or shape.steps)
  sides = {'jax': JaxSide(model, params, batches)}
  if against == 'torch':
    sides['torch'] = torch_side.TorchSide(shape.arch, vocab_size, params, batches)
  if 'torch' in sides:  # Same weights and no dropout: both sides compute the same function.
    logits_diff = float(np.max(np.abs(
        np.asarray(jax.jit(model.apply)({'params': params}, batches[0]['input_ids']))
        - sides['torch'].logits(batches[0]).numpy())))
  times = collections.defaultdict(list)
  for round_ in range(rounds + 1):  # Round 0 warms up and is not counted.
    for side_name, side in sides.items():
      for what in ('train', 'eval_float', 'eval_int8_native_dots', 'eval_int8_float32_dots',
                   'eval_int8_activation_pruned'):
        if hasattr(side, what):
          seconds = getattr(side, what)()
          if round_:
            times[f'{side_name}_{what}'].append(seconds)
  examples = shape.batch * len(batches)
  rate = lambda key: examples / statistics.median(times[key])
  train_rate = rate('jax_train')
  flops = measure.train_flops_per_example(shape.arch, shape.length)
  result = {
      'case': name, 'architecture': shape.arch.to_dict(), 'batch': shape.batch,
      'seq_length': shape.length, 'dropout': DROPOUT, 'dtype': dtype,
      'compile_seconds': _rounded(sides['jax'].compile_seconds),
      'train_examples_per_s': round(train_rate, 2),
      'train_real_tokens_per_s': round(train_rate * real_tokens(batches) / examples, 1),
      'eval_float_examples_per_s': round(rate('jax_eval_float'), 2),
      'int8_dot': sides['jax'].int8_dot,
      'eval_int8_examples_per_s': round(rate(f'jax_eval_int8_{sides["jax"].int8_dot}_dots'), 2),
      'eval_int8_native_dots_examples_per_s': round(rate('jax_eval_int8_native_dots'), 2),
      'eval_int8_float32_dots_examples_per_s': round(rate('jax_eval_int8_float32_dots'), 2),
      'eval_int8_activation_pruned_examples_per_s':
          round(rate('jax_eval_int8_activation_pruned'), 2),
      'train_dot_operand_types': sides['jax'].train_dots,
      'train_step_memory_mb': round(sides['jax'].step_memory_bytes / 2 ** 20, 1),
      'process_peak_rss_mb': round(measure.peak_rss_mb(), 1),
      'train_gflop_per_s': round(train_rate * flops / 1e9, 2),
      'matmul_peak_gflop_per_s': round(peak, 2),
      'fraction_of_matmul_peak': round(train_rate * flops / 1e9 / peak, 3),
  }
  if 'torch' in sides:
    ratios = lambda what: [t / j for j, t in zip(times[f'jax_{what}'], times[f'torch_{what}'])]
    result['torch'] = {
        'train_examples_per_s': round(rate('torch_train'), 2),
        'eval_float_examples_per_s': round(rate('torch_eval_float'), 2),
        'initial_logits_max_abs_diff': logits_diff,
    }
    result['speedup_vs_torch'] = {
        what: {'median': round(statistics.median(ratios(what)), 3),
               'per_round': [round(r, 3) for r in ratios(what)]}
        for what in ('train', 'eval_float')}
  return result


def epoch_case(exp, *, against: str, dtype: str) -> dict:
  """One epoch at batch 8, max_length 512: jaxnas (length buckets) vs HF Trainer."""
  config, arch = exp.config, SHAPES['small'].arch
  model = jax_model(arch, exp.tokenizer.get_vocab_size(), dtype)
  params = models.init_params(model, jax.random.key(0))
  split = exp.train_split
  steps = exp.trainer.steps_per_epoch(split)
  with workflows.CompileClock() as meter:
    start = time.perf_counter()
    state = train.create_train_state(model, params, config.train, steps, jax.random.key(1))
    state, _, _ = exp.trainer.fit(state, split, 1)
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - start
  examples, tokens = len(split), int(sum(len(ids) for ids in split.token_ids))
  result = {
      'case': 'epoch', 'architecture': arch.to_dict(), 'batch': config.train.batch_size,
      'max_length': config.tokenizer.max_length, 'train_examples': examples,
      'buckets': list(exp.trainer.buckets), 'steps': steps,
      'wall_seconds': round(seconds, 2), 'compile_seconds': round(meter.seconds, 2),
      'xla_compile_seconds': round(meter.xla_seconds, 2),
      'train_examples_per_s': round(examples / seconds, 2),
      'train_real_tokens_per_s': round(tokens / seconds, 1),
      'train_examples_per_s_without_compile': round(examples / (seconds - meter.seconds), 2),
      'process_peak_rss_mb': round(measure.peak_rss_mb(), 1),
  }
  if against == 'torch':
    torch_seconds = torch_side.hf_trainer_epoch(arch, exp, params)
    result['torch_hf_trainer'] = {'wall_seconds': round(torch_seconds, 2),
                                  'train_examples_per_s': round(examples / torch_seconds, 2)}
    result['speedup_vs_torch'] = round(torch_seconds / seconds, 3)
  return result


def _rounded(d: dict) -> dict:
  return {k: round(v, 2) for k, v in d.items()}
