"""What slicing costs: compile time and step time of a sub-network's gradient program, per size
shape, on random tokens at the default's batch (32 x 128), for the float and the QAT + 50% mask
program; and, given a finished one-shot run's workdir, what one-shot scoring costs with one
program per size shape (`oneshot.ShapeScorer`) against one per architecture
(`oneshot.score_candidate`) on its first trials' architectures, interleaved (README: One-shot
search). The persistent compilation cache stays off, so each scorer compiles what a fresh
search would.

  python -m jaxnas.elastic_bench
  python -m jaxnas.elastic_bench runs/oneshot 40
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import (elastic, objectives, oneshot, quantization, runner, search_space,
                    supernet, workflows)
from jaxnas.models import Architecture, BertClassifier, init_params

SHAPES = (Architecture(4, 8, 256, 1024), Architecture(2, 2, 128, 512),
          Architecture(4, 4, 192, 768), Architecture(2, 4, 256, 1024))
SETTINGS = dict(vocab_size=8000, max_length=128, num_classes=2)


def grad_program(shape: Architecture, qat: bool, engine):
  model = BertClassifier(shape, **SETTINGS)
  run_model = engine.training_model(model) if qat else model

  @jax.jit
  def grad_fn(params, gates, batch, key):
    def loss(params):
      sub = elastic.elastic_params(params, model, gates, 0.5 if qat else None)
      logits = run_model.apply({'params': sub}, batch['input_ids'], deterministic=False,
                               rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels']).mean()
    return jax.value_and_grad(loss)(params)
  return grad_fn


def time_scoring(workdir: str, count: int):
  """Scores the first `count` distinct architectures of `workdir`'s one-shot study with both
  scorers, alternating, and prints each one's seconds and validation accuracy."""
  config = runner.workdir_config(workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    trials = json.load(f)['run']['trials']
  archs = list(dict.fromkeys(Architecture.from_dict(t['architecture']) for t in trials
                             if 'architecture' in t))[:count]
  exp = workflows.prepare_experiment(config, show_progress=False)
  space = search_space.validate_space(config.search.space)
  trainer = supernet.SupernetTrainer(exp, space, config.oneshot.num_random,
                                     config.oneshot.train_shapes)
  state, _, _ = trainer.fit(os.path.join(os.path.abspath(workdir), 'checkpoints', 'supernet'),
                            config.oneshot.epochs)  # Restores the finished supernet.
  params = jax.device_get(state.params)
  shape_scorer = oneshot.ShapeScorer(exp, params, objectives.Objectives.parse('accuracy', 0))
  totals = {'per size shape': 0.0, 'per architecture': 0.0}
  for i, arch in enumerate(archs):
    by_shape = shape_scorer.score(arch)
    by_arch = oneshot.score_candidate(exp, params, arch)
    totals['per size shape'] += by_shape['trial_seconds']
    totals['per architecture'] += by_arch['trial_seconds']
    print(f'{i}: {oneshot.describe(arch)}: per size shape {by_shape["trial_seconds"]:.2f} s '
          f'({by_shape["validation_accuracy"]:.3f}), per architecture '
          f'{by_arch["trial_seconds"]:.2f} s ({by_arch["validation_accuracy"]:.3f})', flush=True)
  print(f'{len(archs)} architectures: ' + ', '.join(f'{k} {v:.1f} s' for k, v in totals.items()))


def main():
  if len(sys.argv) > 1:
    return time_scoring(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
  params = jax.device_put(init_params(BertClassifier(SHAPES[0], **SETTINGS), jax.random.key(0)))
  engine = quantization.get_engine('aqt')
  rng = np.random.default_rng(0)
  batch = {'input_ids': jnp.asarray(rng.integers(5, 8000, (32, 128)), jnp.int32),
           'labels': jnp.asarray(rng.integers(0, 2, 32), jnp.int32)}
  for qat in (False, True):
    for shape in SHAPES:
      fn, gates = grad_program(shape, qat, engine), jnp.asarray(elastic.gates_of(shape))
      with workflows.CompileClock() as clock:
        jax.block_until_ready(fn(params, gates, batch, jax.random.key(1)))
      seconds = []
      for i in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(params, gates, batch, jax.random.key(i)))
        seconds.append(time.perf_counter() - start)
      print(f'{"QAT + masks" if qat else "float"} {shape.num_layers}/{shape.num_heads}/'
            f'{shape.hidden_size}/{shape.intermediate_size}: compile {clock.seconds:.1f} s, '
            f'step {np.median(seconds):.3f} s', flush=True)


if __name__ == '__main__':
  main()
