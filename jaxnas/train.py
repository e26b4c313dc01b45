"""Train and eval steps, and the loops that run them over length-bucketed batches.

Data parallel: batches are sharded along the 'data' axis of a mesh over all devices (or over
one group of them, when several trials run side by side); parameters, optimizer state and
pruning masks are replicated. One jitted program per bucket length.
"""

import copy
import functools
import itertools
import math
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnas import distributed, input_pipeline, progress
from jaxnas.errors import UserError

DATA_AXIS = 'data'
# Timed batches behind a latency, at least, and the seconds they span: one batch's time on a
# shared CPU varied 4x between two runs of the same trial, so `ms_per_example` is the median of
# many, over long enough to average over other processes' time slices (with their spread).
LATENCY_BATCHES = 32
LATENCY_SECONDS = 0.5


class TrainState(train_state.TrainState):
  """Flax's TrainState plus fixed pruning masks and the dropout key.

  `masks` maps '/'-joined parameter paths to 0/1 arrays; those parameters stay exactly zero
  where the mask is 0 (gradients and weights are masked after every update).
  """
  masks: dict
  dropout_rng: jax.Array


def make_mesh(devices=None) -> Mesh:
  """A data-parallel mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def device_groups(trials_in_parallel: str) -> list[list[jax.Device]]:
  """This host's devices split into one group per trial run at the same time.

  `trials_in_parallel`: a count that divides the number of local devices, or 'auto': one
  trial per device (a CPU is one device unless XLA_FLAGS splits it). With one group, a
  trial's mesh is `make_mesh()`: every device, every process.
  """
  devices = jax.local_devices()
  if trials_in_parallel == 'auto':
    count = len(devices)
  elif trials_in_parallel.isdigit() and int(trials_in_parallel) > 0:
    count = int(trials_in_parallel)
  else:
    raise UserError(f'--trials_in_parallel must be a positive count or auto, got '
                    f'{trials_in_parallel!r}')
  if count > 1 and jax.process_count() > 1:
    raise UserError('--trials_in_parallel runs trials side by side on one host; a '
                    'multi-process run spreads each trial over all processes (use 1)')
  if len(devices) % count:
    raise UserError(f'--trials_in_parallel={count} does not divide the {len(devices)} '
                    f'{jax.default_backend()} devices of this host into equal groups')
  size = len(devices) // count
  return [devices[i:i + size] for i in range(0, len(devices), size)]


def check_batch_size(batch_size: int, mesh: Mesh):
  if batch_size % mesh.size:
    raise UserError(f'batch size {batch_size} does not divide evenly over {mesh.size} devices')


def make_optimizer(config, num_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup then linear decay to 0, and global-norm gradient clipping.

  Clipping and Adam's moments run on all parameters as one flat vector (`optax.flatten`):
  the same arithmetic, but XLA compiles a few loops instead of several per parameter tensor,
  which took about a quarter of a small model's train step compile time.
  """
  warmup = min(config.warmup_steps, num_steps)
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
      optax.linear_schedule(config.learning_rate, 0.0, max(num_steps - warmup, 1)),
  ], boundaries=[warmup])
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key in ('kernel', 'embedding'), params)
  weight_decay = ([optax.add_decayed_weights(config.weight_decay, mask=decay_mask)]
                  if config.weight_decay else [])
  return optax.chain(
      optax.flatten(optax.chain(optax.clip_by_global_norm(config.grad_clip),
                                optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))),
      *weight_decay, optax.scale_by_learning_rate(schedule))


def apply_masks(tree, masks: dict):
  """Multiplies the leaves named in `masks` by their masks; other leaves pass through."""
  if not masks:
    return tree
  flat = flax.traverse_util.flatten_dict(tree, sep='/')
  flat = {path: value * masks[path].astype(value.dtype) if path in masks else value
          for path, value in flat.items()}
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def weighted_loss_and_correct(logits, batch):
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels'])
  correct = (jnp.argmax(logits, -1) == batch['labels']).astype(jnp.float32)
  weights = batch['weights']
  return jnp.sum(per_example * weights), jnp.sum(correct * weights), jnp.sum(weights)


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
  dropout_rng = jax.random.fold_in(state.dropout_rng, state.step)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, batch['input_ids'], deterministic=False,
                            rngs={'dropout': dropout_rng})
    loss_sum, correct, count = weighted_loss_and_correct(logits, batch)
    return loss_sum / jnp.maximum(count, 1.0), (correct, count)

  (loss, (correct, count)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=apply_masks(grads, state.masks))
  state = state.replace(params=apply_masks(state.params, state.masks))
  return state, {'loss': loss, 'correct': correct, 'count': count}


def eval_step(apply_fn: Callable, variables: Any, batch: dict) -> dict:
  """The batch's summed loss and each row's predicted class (padding rows included)."""
  logits = apply_fn(variables, batch['input_ids'], deterministic=True)
  loss_sum, _, _ = weighted_loss_and_correct(logits, batch)
  return {'loss_sum': loss_sum, 'predictions': jnp.argmax(logits, -1).astype(jnp.int32)}


# XLA on CPU hands whole blocks, e.g. an attention's matmul, softmax and matmul, to YNNPACK
# fusions by default. On this project's CPU (BENCHMARKS.md), eval steps ran up to 2.2x as
# fast with YNNPACK kept to convolutions (none here), with equal outputs, except for programs
# with XLA's int8 dots, which ran 20-40% slower that way; train steps gained about 2% for 50%
# more compile time. So eval steps without int8 dots turn the fusions off.
NO_YNN_FUSIONS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'}


def jit_eval_step(apply_fn: Callable, int8_dots: bool = False,
                  out_shardings: Optional[NamedSharding] = None):
  """`eval_step` of `apply_fn`, jitted; on a CPU without YNNPACK fusions unless `apply_fn`
  runs XLA's int8 dots (a served model of an engine whose `int8_dots` is true).

  `out_shardings` replicated gathers each row's prediction onto every process.
  """
  options = NO_YNN_FUSIONS if not int8_dots and jax.default_backend() == 'cpu' else None
  return jax.jit(functools.partial(eval_step, apply_fn), compiler_options=options,
                 out_shardings=out_shardings)


def create_train_state(model, params, config, num_steps: int, rng: jax.Array,
                       masks: Optional[dict] = None,
                       sharding: Optional[NamedSharding] = None) -> TrainState:
  """A fresh optimizer over masked `params`, built in one jitted program (its output placed
  with `sharding`, e.g. replicated over a mesh that spans several processes).

  Eager optimizer init would compile a small program per parameter shape, which costs more
  than the training of a small trial on a CPU. The state's buffers are new, so donating them
  to the train step never deletes the caller's `params`.
  """
  tx = make_optimizer(config, num_steps)

  @functools.partial(jax.jit, out_shardings=sharding)
  def create(params, masks, rng):
    return TrainState.create(apply_fn=model.apply, params=apply_masks(params, masks), tx=tx,
                             masks=masks, dropout_rng=rng)

  return create(params, masks or {}, rng)


class Trainer:
  """Runs train/eval loops on a mesh for one split layout (batch size, buckets)."""

  def __init__(self, batch_size: int, eval_batch_size: int, buckets, seed: int,
               mesh: Optional[Mesh] = None, show_progress: bool = True,
               stop_requested: Callable[[], bool] = lambda: False):
    self.mesh = mesh or make_mesh()
    check_batch_size(batch_size, self.mesh)
    check_batch_size(eval_batch_size, self.mesh)
    self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
    self.buckets, self.seed, self.show_progress = tuple(buckets), seed, show_progress
    self.stop_requested = stop_requested
    self.on_step: Callable[[], None] = lambda: None  # Called after every training step.
    self.data_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self._train_step = jax.jit(train_step, donate_argnums=0)
    self._eval_steps = {}  # (apply_fn, int8_dots) -> jitted eval step, reused.

  def with_seed(self, seed: int) -> 'Trainer':
    """This trainer with another data-order seed; it shares the compiled steps."""
    trainer = copy.copy(self)
    trainer.seed = seed
    return trainer

  def on_devices(self, devices, show_progress: bool,
                 stop_requested: Callable[[], bool]) -> 'Trainer':
    """A trainer like this one on a mesh over `devices` alone (one trial of several run side
    by side)."""
    return Trainer(self.batch_size, self.eval_batch_size, self.buckets, self.seed,
                   make_mesh(devices), show_progress, stop_requested)

  def with_on_step(self, on_step: Callable[[], None]) -> 'Trainer':
    """This trainer calling `on_step()` after every training step; it shares the compiled
    steps."""
    trainer = copy.copy(self)
    trainer.on_step = on_step
    return trainer

  def steps_per_epoch(self, split) -> int:
    return len(input_pipeline.epoch_plan(split, self.batch_size, self.buckets, self.seed, 0))

  def put_batch(self, batch):
    """The batch sharded over the data axis; each process transfers only the rows its own
    devices hold (every process computes the same batch plan)."""
    return jax.tree.map(lambda x: jax.make_array_from_callback(
        x.shape, self.data_sharding, lambda index: x[index]), batch)

  def num_steps(self, split, num_epochs: float) -> int:
    """Steps of `num_epochs` epochs (a fraction of an epoch runs its first steps)."""
    return max(1, round(self.steps_per_epoch(split) * num_epochs))

  def fit(self, state: TrainState, split, num_epochs: float, description: str = 'train',
          checkpoints=None, after_step: Optional[Callable[[TrainState], None]] = None,
          step_fn: Optional[Callable[[TrainState, dict], tuple[TrainState, dict]]] = None):
    """Trains `state` to the end of `num_epochs`, resuming from `checkpoints` if they hold any.

    With `checkpoints` (a `checkpoints.TrainingCheckpoints`), the state is saved periodically,
    at the end, and before raising KeyboardInterrupt when `stop_requested()` turns true.
    `after_step(state)` runs after every step (and may raise to stop training). `step_fn`
    replaces `train_step` (e.g. a supernet's step of several programs); it returns the new
    state and metrics with the step's `loss`.
    Returns the final state, the mean loss of each epoch (or last part of one) finished here,
    and the step it started from (0 unless resumed).
    """
    steps_per_epoch = self.steps_per_epoch(split)
    total = self.num_steps(split, num_epochs)
    state = jax.device_put(state, self.replicated)
    if checkpoints is not None:
      state = checkpoints.restore_latest(state)
    start = int(state.step)
    losses, epoch_losses, plan = [], [], None
    try:
      with progress.bar(total=total, initial=start, desc=description, unit='step',
                        leave=False, disable=not self.show_progress) as bar:
        for step in range(start, total):
          epoch, index = divmod(step, steps_per_epoch)
          if plan is None or index == 0:
            plan = input_pipeline.epoch_plan(split, self.batch_size, self.buckets, self.seed,
                                             epoch)
          batch = input_pipeline.make_batch(split, plan[index], self.batch_size, self.buckets)
          state, metrics = (step_fn or self._train_step)(state, self.put_batch(batch))
          losses.append(metrics['loss'])
          if index == steps_per_epoch - 1 or step == total - 1:
            epoch_losses.append(float(np.mean(jax.device_get(losses))))
            # Shown by the update below: a refresh of its own would repeat the final line.
            bar.set_postfix(loss=f'{epoch_losses[-1]:.4f}', refresh=False)
            losses = []
          bar.update(1)
          self.on_step()
          stop = self.stop_requested()  # Polled once after every step.
          if checkpoints is not None:
            checkpoints.save(state, force=stop)
          if stop:
            raise KeyboardInterrupt
          if after_step is not None:
            after_step(state)
      if checkpoints is not None:
        checkpoints.save(state, force=True)
    finally:
      if checkpoints is not None:
        checkpoints.close()  # Waits for pending writes, on success and on the way out alike.
    return state, epoch_losses, start

  def eval_fn(self, apply_fn, int8_dots: bool = False):
    """The jitted `eval_step` of `apply_fn`, compiled once per batch shape."""
    key = (apply_fn, int8_dots)
    if key not in self._eval_steps:
      self._eval_steps[key] = jit_eval_step(apply_fn, int8_dots, self.replicated)
    return self._eval_steps[key]

  def evaluate(self, apply_fn, variables, split, description: str = 'eval',
               time_batches: bool = False, int8_dots: bool = False) -> dict:
    """Accuracy and mean loss of `apply_fn(variables, ...)` over every example of `split`,
    `correct` (whether each example, in split order, was classified right) and the `seconds`
    it took (compilation included).

    With `time_batches`, each batch is waited for and timed, and `latency` adds the model's
    latency on this device, measured on the evaluation itself (`Trainer.latency`).
    `int8_dots`: `apply_fn` runs XLA's int8 dots (see `NO_YNN_FUSIONS`).
    """
    begin = time.perf_counter()
    eval_fn = self.eval_fn(apply_fn, int8_dots)
    variables = jax.device_put(variables, self.replicated)
    plan = input_pipeline.epoch_plan(split, self.eval_batch_size, self.buckets, self.seed, 0,
                                     shuffle=False)
    outputs, timed = [], []
    for indices in progress.bar(plan, desc=description, unit='batch', leave=False,
                        disable=not self.show_progress):
      batch = self.put_batch(
          input_pipeline.make_batch(split, indices, self.eval_batch_size, self.buckets))
      start = time.perf_counter()
      outputs.append(eval_fn(variables, batch))
      if time_batches:
        jax.block_until_ready(outputs[-1])
        timed.append((batch['input_ids'].shape, time.perf_counter() - start))
    latency = self.latency(eval_fn, variables, split, plan, timed) if time_batches else None
    predictions = np.zeros(len(split), np.int32)
    loss_sum = 0.0
    for indices, output in zip(plan, jax.device_get(outputs)):
      predictions[indices] = output['predictions'][:len(indices)]
      loss_sum += float(output['loss_sum'])
    correct = predictions == split.labels
    metrics = {'accuracy': float(np.mean(correct)), 'loss': loss_sum / len(split),
               'correct': correct, 'seconds': time.perf_counter() - begin}
    if time_batches:
      metrics['latency'] = latency
    return metrics

  def latency(self, eval_fn, variables, split, plan, timed) -> dict:
    """`ms_per_example`, the median time of a batch over its size, from the evaluation's
    `timed` batches ((shape, seconds) in plan order), with `ms_per_example_iqr` (the 25th
    and 75th percentiles), `batches` (how many were timed) and `batch_size`.

    The first batch of each shape is left out: it may include compilation. Batches are run
    again, in plan order, until `LATENCY_BATCHES` are timed, then as many more as span
    `LATENCY_SECONDS` at the pace process 0 measured (every process runs the same programs).
    """
    seen, seconds = set(), []
    for shape, elapsed in timed:
      if shape in seen:
        seconds.append(elapsed)
      seen.add(shape)
    again = itertools.cycle(plan)

    def time_more(count: int):
      for indices in itertools.islice(again, max(0, count)):
        batch = self.put_batch(
            input_pipeline.make_batch(split, indices, self.eval_batch_size, self.buckets))
        start = time.perf_counter()
        jax.block_until_ready(eval_fn(variables, batch))
        seconds.append(time.perf_counter() - start)

    time_more(LATENCY_BATCHES - len(seconds))
    time_more(distributed.broadcast_json(
        math.ceil((LATENCY_SECONDS - sum(seconds)) / float(np.median(seconds)))))
    low, median, high = 1000 * np.percentile(seconds, (25, 50, 75)) / self.eval_batch_size
    return {'ms_per_example': float(median), 'ms_per_example_iqr': [float(low), float(high)],
            'batches': len(seconds), 'batch_size': self.eval_batch_size}
