"""jaxnas's side of a fixed-shape case: its compiled train step and eval programs."""

import time

import jax

from jaxnas import quantization, train
from jaxnas.bench.measure import dot_operand_types, timed
from jaxnas.bench.shapes import LAB_ACTIVATION_SPARSITY, optimizer_config


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
