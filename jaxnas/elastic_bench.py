"""What slicing costs: compile time and step time of a sub-network's gradient program, per size
shape, on random tokens at the default's batch (32 x 128), for the float and the QAT + 50% mask
program (README: One-shot search).

  python -m jaxnas.elastic_bench
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import elastic, quantization, workflows
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


def main():
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
