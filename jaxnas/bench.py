"""Throughput of jaxnas, optionally side by side with the PyTorch/transformers pipeline.

  python -m jaxnas.bench                      # all cases, jaxnas only
  python -m jaxnas.bench --against=torch      # and the PyTorch reference, alternating
  python -m jaxnas.bench --cases=small,large --rounds=7

Prints one JSON line per case, each with the machine it ran on (`machine`: CPU model, cores,
AVX-512/BF16/VNNI/AMX features). Cases:
  * `small`, `large`: a fixed-shape train step (dropout 0.1, padding mask, AdamW with
    clipping) of 2 x 128 x 512 at batch 8 x 512 and 4 x 256 x 1024 at batch 32 x 256, plus
    float and served-int8 eval. Against torch, `transformers.BertForSequenceClassification`
    gets the same initial weights and the same token batches; JAX and torch rounds alternate
    and the reported ratio is the median of per-round ratios (robust to a loaded machine).
    The served int8 eval runs its dots as jaxnas picks for the machine (`int8_dot`: XLA's
    native int8 dots with VNNI or AMX, else the exact float32 emulation), is also timed with
    configs/lab2.py's activation pruning (0.5), and with each of the two dot paths forced.
  * `epoch`: one epoch of the embedded IMDb training split (its 12,500 reviews, or
    `--epoch_train_size` of them) at max_length 512, batch 8: jaxnas's `Trainer.fit` with its
    length buckets against HF Trainer with dynamic padding (`DataCollatorWithPadding`), as the
    original lab ran it. About 16 minutes here with `--against=torch`.
  * `compile`: a whole `retrain` trial of configs/default.py in a fresh process with an
    empty persistent compilation cache, then in a second fresh process with that cache (a
    rerun or resumed search); each reports compile seconds and cache hits (`trial` is one
    such run, with `--cache_dir`).
  * `search` (only when named): the default job, `python launch.py` with configs/default.py,
    from empty compilation and tokenizer caches, split into the training loops (float and
    QAT), the scoring evaluations, all compilation, and everything else; with the test
    accuracy of the model it selects (on validation), its 95% interval and sample size.

Both sides tokenize with the same jaxnas tokenizer. PyTorch is a benchmark-only dependency
(requirements-bench.txt). The bench runs with huge pages (jaxnas/hugepages.py), as launch.py
does; in one process, PyTorch gets them too. `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns
them off for both sides.
"""

from jaxnas import hugepages

if __name__ == '__main__':
  hugepages.restart_with_huge_pages()  # Before the heavy imports, which a restart would redo.

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import contextlib
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import input_pipeline, machine, models, quantization, train, workflows
from jaxnas.models import Architecture
from jaxnas.tokenizer import PAD_ID
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('cases', ['small', 'large', 'epoch', 'compile'], 'Cases to run, in order.')
flags.DEFINE_enum('against', 'none', ['none', 'torch'], 'Reference to run side by side.')
flags.DEFINE_integer('rounds', 5, 'Alternating JAX/torch timing rounds per fixed-shape case.')
flags.DEFINE_integer('steps', 0, 'Train steps (and eval batches) timed per round; 0: the '
                     "case's own (about 50 examples).")
flags.DEFINE_integer('epoch_train_size', 0, 'Reviews in the epoch case, subsampled from '
                     'the embedded IMDb training split; 0: all 12,500.')
flags.DEFINE_integer('threads', 2, 'torch intra-op threads (XLA uses every core).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'jaxnas computation dtype.')
flags.DEFINE_string('cache_dir', '', 'Persistent compilation cache of the `trial` case.')


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


# ---------------------------------------------------------------- measurements


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
  """The best float32 GEMM rate XLA reaches here: the roof for achieved GFLOP/s."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = min(timed(lambda: matmul(a).block_until_ready())[1] for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def dot_operand_types(hlo_text: str) -> dict:
  """How many dots of a compiled program (its optimized HLO text) take each pair of operand
  types. With `--dtype=bfloat16` this says which dots XLA kept in bfloat16 and which it runs
  in float32 with converted operands, as it does for all of them on a CPU without
  AVX512_BF16."""
  counts = collections.Counter()
  for computation in re.split(r'\n(?=\S)', hlo_text):
    types = dict(re.findall(r'%([\w.-]+) = (\w+)\[', computation))
    for lhs, rhs in re.findall(r' dot\(%([\w.-]+), %([\w.-]+)\)', computation):
      counts[f'{types.get(lhs)} x {types.get(rhs)}'] += 1
  return dict(sorted(counts.items()))


def train_flops_per_example(arch: Architecture, length: int) -> float:
  """Model FLOPs of one training example (forward + backward = 3x forward), matmuls only. The
  last block computes keys and values for every token and the rest for [CLS] only."""
  d, f = arch.hidden_size, arch.intermediate_size
  per_token = 2 * (4 * d * d + 2 * d * f) + 2 * 2 * length * d  # Projections, FFN, QK^T, PV.
  last_block = 2 * 2 * d * d * length + per_token
  return 3 * ((arch.num_layers - 1) * per_token * length + last_block)


# ---------------------------------------------------------------- JAX side


def jax_model(arch: Architecture, vocab_size: int) -> models.BertClassifier:
  return models.BertClassifier(arch, vocab_size, max_length=512, dropout_rate=DROPOUT,
                               attention_dropout_rate=DROPOUT, dtype=FLAGS.dtype)


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


class JaxSide:
  """jaxnas's train step, float eval and served-int8 eval on one fixed shape."""

  def __init__(self, model, params, batches):
    self.batches = batches
    self.state = train.create_train_state(model, params, optimizer_config(), 10 ** 6,
                                          jax.random.key(1))
    self.compile_seconds = {}
    self.train_step, self.compile_seconds['train'] = timed(
        lambda: jax.jit(train.train_step, donate_argnums=0).lower(self.state, batches[0])
        .compile())

    def compile_eval(name, apply_fn, variables, int8_dots=False):
      compiled, self.compile_seconds[name] = timed(
          lambda: train.jit_eval_step(apply_fn, int8_dots).lower(variables, batches[0]).compile())
      return compiled

    self.float_eval = compile_eval('eval_float', model.apply, {'params': params})
    engine = quantization.AqtInt8()  # Its int8 dots as picked for this machine.
    self.int8_dot = engine.int8_dot
    self.int8 = engine.convert(model, params)
    pruned = model.clone(activation_sparsity=LAB_ACTIVATION_SPARSITY)
    self.int8_pruned_eval = compile_eval('eval_int8_activation_pruned',
                                         engine.serving_apply(pruned), self.int8,
                                         engine.int8_dots)
    self.int8_evals = {}  # Each dot path forced; `int8_dot`'s is the served int8 eval.
    for path in quantization.INT8_DOTS:
      forced = quantization.AqtInt8(path)
      self.int8_evals[path] = compile_eval(f'eval_int8_{path}_dots',
                                           forced.serving_apply(model), self.int8,
                                           forced.int8_dots)
    self.params = params
    self.train_dots = dot_operand_types(self.train_step.as_text())
    memory = self.train_step.memory_analysis()
    self.step_memory_bytes = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                              + memory.output_size_in_bytes - memory.alias_size_in_bytes)

  def train(self) -> float:
    start = time.perf_counter()
    for batch in self.batches:
      self.state, metrics = self.train_step(self.state, batch)
    jax.block_until_ready((self.state.params, metrics))
    return time.perf_counter() - start

  def eval_float(self) -> float:
    return self._eval(self.float_eval, {'params': self.params})

  def eval_int8_native_dots(self) -> float:
    return self._eval(self.int8_evals['native'], self.int8)

  def eval_int8_float32_dots(self) -> float:
    return self._eval(self.int8_evals['float32'], self.int8)

  def eval_int8_activation_pruned(self) -> float:
    return self._eval(self.int8_pruned_eval, self.int8)

  def _eval(self, compiled, variables) -> float:
    start = time.perf_counter()
    jax.block_until_ready([compiled(variables, batch) for batch in self.batches])
    return time.perf_counter() - start


# ---------------------------------------------------------------- PyTorch side


def torch_model(arch: Architecture, vocab_size: int, params):
  """`BertForSequenceClassification` with jaxnas's math (post-LN, exact GELU, dropout 0.1,
  padding mask, SDPA attention) and the given JAX weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
      num_attention_heads=arch.num_heads, intermediate_size=arch.intermediate_size,
      hidden_act='gelu', hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT,
      max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, num_labels=2,
      pad_token_id=PAD_ID, attn_implementation='sdpa')
  model = transformers.BertForSequenceClassification(config)
  state = {name: torch.from_numpy(np.array(value))
           for name, value in torch_state_dict(arch, jax.device_get(params)).items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [m for m in missing if not m.endswith('position_ids')]
  if missing or unexpected:
    raise ValueError(f'weight mapping: missing {missing}, unexpected {unexpected}')
  return model


def torch_state_dict(arch: Architecture, params) -> dict:
  """JAX parameters under transformers' BERT names (Dense kernels transposed)."""
  state = {}

  def dense(torch_name, p):
    state[f'{torch_name}.weight'] = np.asarray(p['dense']['kernel']).T
    state[f'{torch_name}.bias'] = np.asarray(p['dense']['bias'])

  def norm(torch_name, p):
    state[f'{torch_name}.weight'], state[f'{torch_name}.bias'] = p['scale'], p['bias']

  for jax_name, torch_name in (('token_embeddings', 'word'), ('position_embeddings', 'position'),
                               ('segment_embeddings', 'token_type')):
    state[f'bert.embeddings.{torch_name}_embeddings.weight'] = params[jax_name]['embedding']
  norm('bert.embeddings.LayerNorm', params['embeddings_norm'])
  for i in range(arch.num_layers):
    p, prefix = params[f'layer_{i}'], f'bert.encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      dense(f'{prefix}.attention.self.{name}', p[name])
    dense(f'{prefix}.attention.output.dense', p['attention_output'])
    norm(f'{prefix}.attention.output.LayerNorm', p['attention_norm'])
    dense(f'{prefix}.intermediate.dense', p['intermediate'])
    dense(f'{prefix}.output.dense', p['output'])
    norm(f'{prefix}.output.LayerNorm', p['output_norm'])
  dense('bert.pooler.dense', params['pooler'])
  dense('classifier', params['classifier'])
  return state


class TorchSide:
  """The same model, batches and optimizer (AdamW, clipping, linear decay) in PyTorch."""

  def __init__(self, arch, vocab_size, params, batches):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.model = torch_model(arch, vocab_size, params)
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE,
                                       betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                      lambda step: 1 - step / 10 ** 6)
    self.batches = [self.to_torch(b) for b in batches]

  def to_torch(self, batch):
    ids = self.torch.from_numpy(batch['input_ids']).long()
    return {'input_ids': ids, 'attention_mask': (ids != PAD_ID).long(),
            'labels': self.torch.from_numpy(batch['labels']).long()}

  def train(self) -> float:
    self.model.train()
    start = time.perf_counter()
    for batch in self.batches:
      self.model(**batch).loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
      self.schedule.step()
      self.optimizer.zero_grad()
    return time.perf_counter() - start

  def eval_float(self) -> float:
    self.model.eval()
    start = time.perf_counter()
    with self.torch.inference_mode():
      for batch in self.batches:
        self.model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'])
    return time.perf_counter() - start

  def logits(self, batch):
    self.model.eval()
    with self.torch.inference_mode():
      t = self.to_torch(batch)
      return self.model(input_ids=t['input_ids'], attention_mask=t['attention_mask']).logits


# ---------------------------------------------------------------- cases


def fixed_shape_case(name: str, split, vocab_size: int, against: str, peak: float) -> dict:
  """A fixed-shape train step and eval, JAX and (optionally) torch rounds alternating."""
  shape = SHAPES[name]
  model = jax_model(shape.arch, vocab_size)
  params = models.init_params(model, jax.random.key(0))
  batches = fixed_batches(split, shape, FLAGS.steps or shape.steps)
  sides = {'jax': JaxSide(model, params, batches)}
  if against == 'torch':
    sides['torch'] = TorchSide(shape.arch, vocab_size, params, batches)
  if 'torch' in sides:  # Same weights and no dropout: both sides compute the same function.
    logits_diff = float(np.max(np.abs(
        np.asarray(jax.jit(model.apply)({'params': params}, batches[0]['input_ids']))
        - sides['torch'].logits(batches[0]).numpy())))
  times = collections.defaultdict(list)
  for round_ in range(FLAGS.rounds + 1):  # Round 0 warms up and is not counted.
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
  flops = train_flops_per_example(shape.arch, shape.length)
  result = {
      'case': name, 'architecture': shape.arch.to_dict(), 'batch': shape.batch,
      'seq_length': shape.length, 'dropout': DROPOUT, 'dtype': FLAGS.dtype,
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
      'process_peak_rss_mb': round(peak_rss_mb(), 1),
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


def epoch_case(exp, against: str) -> dict:
  """One epoch at batch 8, max_length 512: jaxnas (length buckets) vs HF Trainer."""
  config, arch = exp.config, SHAPES['small'].arch
  model = jax_model(arch, exp.tokenizer.get_vocab_size())
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
      'process_peak_rss_mb': round(peak_rss_mb(), 1),
  }
  if against == 'torch':
    torch_seconds = hf_trainer_epoch(arch, exp, params)
    result['torch_hf_trainer'] = {'wall_seconds': round(torch_seconds, 2),
                                  'train_examples_per_s': round(examples / torch_seconds, 2)}
    result['speedup_vs_torch'] = round(torch_seconds / seconds, 3)
  return result


def hf_trainer_epoch(arch: Architecture, exp, params) -> float:
  """Seconds of `Trainer.train()` for one epoch, set up as the original lab did."""
  import datasets  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config, split = exp.config, exp.train_split
  model = torch_model(arch, exp.tokenizer.get_vocab_size(), params)
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=exp.tokenizer,
                                                   pad_token='[PAD]')
  dataset = datasets.Dataset.from_dict({
      'input_ids': [ids.tolist() for ids in split.token_ids],
      'attention_mask': [[1] * len(ids) for ids in split.token_ids],
      'label': split.labels.tolist()})
  with tempfile.TemporaryDirectory() as output_dir:
    args = transformers.TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=config.train.batch_size,
        num_train_epochs=1, learning_rate=config.train.learning_rate, weight_decay=0.0,
        max_grad_norm=config.train.grad_clip, lr_scheduler_type='linear', warmup_steps=0,
        logging_strategy='no', save_strategy='no', eval_strategy='no', report_to=[],
        use_cpu=True, seed=config.seed, disable_tqdm=True)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=transformers.DataCollatorWithPadding(tokenizer))
    with contextlib.redirect_stdout(sys.stderr):  # Its log lines would break the JSON lines.
      _, seconds = timed(trainer.train)
  return seconds


def trial_case(cache_dir: str) -> dict:
  """A `retrain` trial of configs/default.py using the persistent compilation cache."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.compilation_cache_dir = cache_dir
  workflows.use_compilation_cache(cache_dir)
  exp = workflows.prepare_experiment(config, show_progress=False)
  arch = Architecture(2, 4, 128, 512)
  with workflows.CompileClock() as meter:
    _, seconds = timed(lambda: workflows.run_trial(exp, arch, 'retrain'))
  return {'case': 'trial', 'architecture': arch.to_dict(), 'trial_seconds': round(seconds, 2),
          'compile_seconds': round(meter.seconds, 2),
          'xla_compile_seconds': round(meter.xla_seconds, 2),
          'compile_fraction': round(meter.seconds / seconds, 3),
          'persistent_cache': dict(meter.cache_events)}


def compile_case() -> dict:
  """Two fresh processes run the same trial: one with an empty cache, one after it."""
  with tempfile.TemporaryDirectory() as cache_dir:
    runs = {}
    for name in ('cold', 'warm'):
      out = subprocess.run([sys.executable, '-m', 'jaxnas.bench', '--cases=trial',
                            f'--cache_dir={cache_dir}'], check=True, capture_output=True,
                           text=True).stdout
      runs[name] = json.loads(out.strip().splitlines()[-1])
  cold, warm = runs['cold'], runs['warm']
  return {'case': 'compile', 'architecture': cold['architecture'],
          'cold': {k: v for k, v in cold.items() if k not in ('case', 'architecture')},
          'warm': {k: v for k, v in warm.items() if k not in ('case', 'architecture')}}


def search_case() -> dict:
  """Wall time of the default job against the time its training loops and scoring
  evaluations spent computing.

  All compilation counts as overhead: `compile_seconds` covers the whole trial and is taken
  off the loops and evaluations, which include theirs, so both overhead fractions are upper
  bounds. `overhead_fraction` counts the scoring evaluations as the search's work,
  `non_training_fraction` counts them as overhead.
  """
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as workdir:
    command = [sys.executable, 'launch.py', f'--workdir={workdir}',
               f'--config.compilation_cache_dir={workdir}/xla',
               f'--config.tokenizer.cache_dir={workdir}/tokenizers']
    _, seconds = timed(lambda: subprocess.run(command, cwd=repo, check=True,
                                              capture_output=True))
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  trials = [t for t in results['trials'] if t['state'] == 'COMPLETE']
  best = results['best']
  total = lambda key: sum(t[key] for t in trials)
  loops = total('train_seconds') + total('retrain_seconds')
  evals, compile_seconds = total('eval_seconds'), total('compile_seconds')
  work = loops + evals - compile_seconds
  return {'case': 'search', 'command': 'python launch.py', 'trials': len(trials),
          'best_trial': best['number'], 'best_validation_accuracy': best['validation_accuracy'],
          'n_validation': best['n_validation'], 'best_test_accuracy': best['test_accuracy'],
          'best_test_accuracy_interval': [round(x, 4) for x in best['test_accuracy_interval']],
          'n_test': best['n_test'],
          'wall_seconds': round(seconds, 1), 'training_loop_seconds': round(loops, 1),
          'eval_seconds': round(evals, 1), 'compile_seconds': round(compile_seconds, 1),
          'training_and_eval_seconds_without_compile': round(work, 1),
          'compile_fraction': round(compile_seconds / seconds, 3),
          'eval_fraction': round(evals / seconds, 3),
          'overhead_fraction': round(1 - work / seconds, 3),
          'non_training_fraction': round(1 - (work - evals) / seconds, 3)}


def _rounded(d: dict) -> dict:
  return {k: round(v, 2) for k, v in d.items()}


def main(argv):
  del argv
  if FLAGS.against == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(FLAGS.threads)
  exp = None
  for case in FLAGS.cases:
    if case in SHAPES or case == 'epoch':
      if exp is None:
        exp = workflows.prepare_experiment(data_config(FLAGS.epoch_train_size),
                                           show_progress=False)
      if case == 'epoch':
        result = epoch_case(exp, FLAGS.against)
      else:
        result = fixed_shape_case(case, exp.train_split, exp.tokenizer.get_vocab_size(),
                                  FLAGS.against, matmul_peak_gflops())
    elif case == 'compile':
      result = compile_case()
    elif case == 'trial':
      result = trial_case(FLAGS.cache_dir)
    elif case == 'search':
      result = search_case()
    else:
      raise app.UsageError(f'unknown case {case!r}')
    result['load_average_1min'] = round(os.getloadavg()[0], 2)  # Other work on the machine.
    result['machine'] = machine.describe()
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
