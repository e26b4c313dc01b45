"""Supernet training: the sandwich rule with in-place distillation, compression in the loop.

Each step trains several sub-networks of the supernet (`elastic.py`) on the same batch, as
BigNAS does: the largest (on the labels), the smallest and `num_random` random ones (on the
largest one's predicted distribution, held constant: in-place distillation). Every one of them
runs as the `retrain` workflow's compressed model does: QAT int8 through the quantization
engine's training model, with 50% magnitude masks of its own slice of the weights. Their
gradients (each in its own slice of the supernet's tree, zeros elsewhere) are summed into one
optimizer update of the supernet.

Masks are recomputed every step from the current slice, in the program, with a straight-
through gradient: a weight shared by several slices is pruned in some and kept in others, and
the served model of a slice gets the masks of its final weights, which are the ones its last
training step used. The sparsity follows a schedule (Zhu & Gupta's cubic ramp): none for the
first `prune_start` of the steps, rising to the configured sparsity at `prune_end`, held there
to the end. Masks from the start kept the test config's supernet from learning at all in 45
steps (validation 0.50, against 1.00 without masks); and pruned weights get no gradient
without the straight-through one, so they would stay frozen. The sparsity is data, like the
identity choices: a float warm phase would compile every shape's program twice.

Compilation bounds the design on a CPU: a sub-network's program compiles once per size shape
(5-15 s each on a 2-core CPU, README: One-shot search), while its Linear/Identity choices are
data. The random sub-networks take their sizes from a pool of `train_shapes` shapes drawn once
per run, covering every option of every size; identity choices are drawn per step. Since
sub-networks are nested slices, shapes outside the pool inherit weights trained through those
in it. The sampled sub-networks are functions of the step, so a resumed run trains the same.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import checkpoints, elastic, search_space, train
from jaxnas.models import Architecture, init_params, square_dense_names


def smallest_architecture(space: dict) -> Architecture:
  """The smallest sizes with every square Dense Identity: the minimum in every dimension."""
  sizes = [min(space[name]) for name in search_space.SIZE_NAMES]
  return Architecture(*sizes, identity=tuple(square_dense_names(sizes[0], *sizes[2:])))


def shape_pool(space: dict, count: int, seed: int) -> list[Architecture]:
  """`count` distinct size shapes (all of them if `count` covers the space), drawn so that
  every option of every size appears when `count` is at least the longest option list."""
  every = [Architecture(*sizes) for sizes in
           itertools.product(*(space[name] for name in search_space.SIZE_NAMES))]
  if count >= len(every):
    return every
  rng = np.random.default_rng([seed, 1])
  columns = []
  for name in search_space.SIZE_NAMES:
    options = space[name]
    columns.append(rng.permutation(np.resize(np.arange(len(options)), count)))
  pool = {Architecture(*(space[name][column[i]] for name, column in
                         zip(search_space.SIZE_NAMES, columns))) for i in range(count)}
  for arch in rng.permutation(len(every)):  # Duplicates replaced by other shapes.
    if len(pool) >= count:
      break
    pool.add(every[arch])
  return sorted(pool, key=lambda a: (a.num_layers, a.num_heads, a.hidden_size,
                                     a.intermediate_size))


def random_identity(shape: Architecture, rng: np.random.Generator) -> Architecture:
  """`shape` with each square Dense Identity with probability 1/2 (the search's prior)."""
  names = elastic.gate_names(shape)
  return Architecture(shape.num_layers, shape.num_heads, shape.hidden_size,
                      shape.intermediate_size,
                      identity=tuple(n for n, skip in zip(names, rng.random(len(names)) < 0.5)
                                     if skip))


def sandwich(space: dict, pool: list, num_random: int, seed: int, step: int) -> list:
  """The sub-networks of one step: largest, smallest and `num_random` random ones."""
  rng = np.random.default_rng([seed, 2, step])
  randoms = [random_identity(pool[rng.integers(len(pool))], rng) for _ in range(num_random)]
  return [elastic.supernet_architecture(space), smallest_architecture(space)] + randoms


def soft_cross_entropy(logits, targets, weights):
  """Mean over the batch's real rows (`weights`) of the cross-entropy to `targets`
  (probabilities; one-hot labels for the largest sub-network)."""
  per_example = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class SupernetTrainer:
  """The sandwich step of one experiment: one gradient program per size shape, compiled on
  first use (`compiled_shapes` lists them), and one update program."""

  def __init__(self, exp, space: dict, num_random: int, train_shapes: int):
    self.exp, self.space, self.num_random = exp, space, num_random
    self.num_steps = 1  # Of the schedule; set by `fit`.
    self.pool = shape_pool(space, train_shapes, exp.config.seed)
    self.supernet = exp.build_model(elastic.supernet_architecture(space))
    self._grad_fns = {}
    cfg = exp.config.oneshot
    self.prune_start, self.prune_end = cfg.prune_start, cfg.prune_end
    self.target_sparsity = exp.config.compression.weight_sparsity
    self.distill = cfg.distillation == 'inplace'
    self.largest_only = cfg.largest_only
    self._update = jax.jit(lambda state, grads: state.apply_gradients(grads=grads),
                           donate_argnums=0)

  @property
  def compiled_shapes(self) -> list[Architecture]:
    return list(self._grad_fns)

  def _grad_fn(self, shape: Architecture):
    """(params, accumulated grads, gates, sparsity, batch, targets, key) -> (grads + this
    sub-network's, loss, logits): its QAT model on its masked, gated slice of `params`."""
    if shape not in self._grad_fns:
      model = self.exp.build_model(shape)
      qat_model = self.exp.engine.training_model(model)

      def loss_fn(params, gates, sparsity, batch, targets, key):
        sub = elastic.elastic_params(params, model, gates, sparsity)
        logits = qat_model.apply({'params': sub}, batch['input_ids'], deterministic=False,
                                 rngs={'dropout': key})
        return soft_cross_entropy(logits, targets, batch['weights']), logits

      def grad_fn(params, acc, gates, sparsity, batch, targets, key):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, gates, sparsity, batch, targets, key)
        return jax.tree.map(jnp.add, acc, grads), loss, logits

      self._grad_fns[shape] = jax.jit(grad_fn, donate_argnums=1)
    return self._grad_fns[shape]

  @property
  def largest_only_steps(self) -> int:
    """The first steps, which train the largest sub-network alone."""
    return math.ceil(self.largest_only * self.num_steps)

  def sparsity(self, step: int) -> float:
    """The pruning schedule: 0 until `prune_start`, a cubic ramp to the target at `prune_end`
    (fractions of the steps)."""
    progress = (step / self.num_steps - self.prune_start) / max(
        self.prune_end - self.prune_start, 1e-9)
    return self.target_sparsity * (1 - (1 - min(max(progress, 0.0), 1.0)) ** 3)

  def step(self, state: train.TrainState, batch: dict):
    """One sandwich step (`Trainer.fit`'s `step_fn`); its `loss` is the largest one's."""
    step = int(state.step)
    key = jax.random.fold_in(state.dropout_rng, step)
    grads = jax.tree.map(jnp.zeros_like, state.params)
    targets = jax.nn.one_hot(batch['labels'], self.exp.num_classes)
    losses, sparsity = [], jnp.float32(self.sparsity(step))
    archs = sandwich(self.space, self.pool, self.num_random, self.exp.config.seed, step)
    if step < self.largest_only_steps:
      archs = archs[:1]
    for i, arch in enumerate(archs):
      grads, loss, logits = self._grad_fn(elastic.size_shape(arch))(
          state.params, grads, jnp.asarray(elastic.gates_of(arch)), sparsity, batch, targets,
          jax.random.fold_in(key, i))
      losses.append(loss)
      if i == 0 and self.distill:  # In-place distillation from the largest sub-network.
        targets = jax.lax.stop_gradient(jax.nn.softmax(logits))
    return self._update(state, grads), {'loss': losses[0]}

  def fit(self, checkpoint_dir: str, num_epochs: float):
    """Trains the supernet from its initialization (resuming from `checkpoint_dir`);
    returns (state, epoch losses of the largest sub-network, step resumed from)."""
    exp, config = self.exp, self.exp.config
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    num_steps = self.num_steps = exp.trainer.num_steps(exp.train_split, num_epochs)
    params = init_params(self.supernet, init_rng)
    train_config = config.train.copy_and_resolve_references()
    train_config.learning_rate = config.oneshot.learning_rate
    train_config.warmup_steps = config.oneshot.warmup_steps
    state = train.create_train_state(self.supernet, params, train_config, num_steps,
                                     dropout_rng, sharding=exp.trainer.replicated)
    return exp.trainer.fit(
        state, exp.train_split, num_epochs, 'supernet (sandwich, QAT)',
        checkpoints.TrainingCheckpoints(checkpoint_dir, config.train.checkpoint_every_steps),
        step_fn=self.step)

