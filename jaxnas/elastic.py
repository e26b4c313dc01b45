"""The elastic model of one-shot search: every architecture of a search space is a slice of the
largest one's parameters (the supernet's).

A sub-network with L layers, h heads, hidden size d and intermediate size f uses the first L
layers, the leading [:d] (or [:d, :d], [:d, :f], [:f, :d]) block of every embedding table,
LayerNorm and kernel, and its heads split those first d hidden units into h heads of d/h
(a kernel's shape does not depend on the heads). `slice_params` cuts that block out of the
supernet's tree for the ordinary `BertClassifier(arch)`, so a sub-network scored with sliced
weights *is* that architecture with those weights, and differentiating through the slice puts
its gradients in the matching block of the supernet's tree, zeros elsewhere.

Slicing compiles one program per size shape. The Linear/Identity choices are data instead
(`gated_params`): the all-Linear model of the shape runs with an identity kernel and a zero bias
in place of each skipped Dense, which in float computes x @ I + 0 = x exactly, so one program
serves every identity pattern of a shape (2^(4L+1) of them). Under QAT the identity kernel's
dot is int8 like every Dense, i.e. such a layer rounds its input to int8 while training; served
models are always the architecture itself (`sub_network`), which skips the layer.

Pruning masks follow each sub-network's slice: `slice_masks` is `pruning.magnitude_masks`
('local' scope) of the sliced kernels, computed in the program: the same stable ranking, so
the same masks as the served model of the slice gets.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas import search_space, train
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier, square_dense_names


def supernet_architecture(space: dict) -> Architecture:
  """The largest architecture of `space`, all Linear: its parameters hold every sub-network's."""
  return Architecture(*(max(space[name]) for name in search_space.SIZE_NAMES))


def size_shape(arch: Architecture) -> Architecture:
  """`arch` with every square Dense Linear: the program that trains all its identity patterns."""
  return Architecture(arch.num_layers, arch.num_heads, arch.hidden_size, arch.intermediate_size)


@functools.lru_cache(maxsize=None)
def param_shapes(model: BertClassifier) -> dict:
  """{'/'-joined path: shape} of `model`'s parameters (traced, nothing compiled)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  return {path: leaf.shape
          for path, leaf in flax.traverse_util.flatten_dict(shapes['params'], sep='/').items()}


def slice_params(super_params, model: BertClassifier):
  """The parameters of `model` (a sub-network's classifier): the leading block of each of the
  supernet's parameters, of the sub-network's shape. Works on arrays and tracers alike."""
  flat = flax.traverse_util.flatten_dict(super_params, sep='/')
  sliced = {}
  for path, shape in param_shapes(model).items():
    if path not in flat or len(shape) != flat[path].ndim or any(
        n > m for n, m in zip(shape, flat[path].shape)):
      raise UserError(f'{model.arch} is not a sub-network of the supernet (parameter {path})')
    sliced[path] = flat[path][tuple(slice(0, n) for n in shape)]
  return flax.traverse_util.unflatten_dict(sliced, sep='/')


def gate_names(shape: Architecture) -> list[str]:
  """The square Dense layers of a size shape, in the order of `gates` vectors."""
  return square_dense_names(shape.num_layers, shape.hidden_size, shape.intermediate_size)


def gates_of(arch: Architecture) -> np.ndarray:
  """1.0 for each Linear square Dense of `arch`, 0.0 for each Identity (`gate_names` order)."""
  return np.array([arch.is_linear(name) for name in gate_names(arch)], np.float32)


def _keep_largest(magnitude, sparsity):
  """`pruning._keep_largest` in jnp: zeroes the round(sparsity * size) smallest |w|, ties
  broken by position (a stable sort), as the host's masks are. `sparsity` may be traced."""
  num_pruned = jnp.round(sparsity * magnitude.size).astype(jnp.int32)
  order = jnp.argsort(magnitude.ravel(), stable=True)
  rank = jnp.zeros(magnitude.size, jnp.int32).at[order].set(jnp.arange(magnitude.size))
  return (rank >= num_pruned).astype(jnp.float32).reshape(magnitude.shape)


def slice_masks(params, sparsity) -> dict:
  """{path: 0/1 mask} of each Dense kernel of `params`: local magnitude pruning, traceable
  (`sparsity` too: one program serves a pruning schedule)."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  return {path: _keep_largest(jnp.abs(value), sparsity) for path, value in flat.items()
          if path.endswith('/kernel')}


def gated_params(params, shape: Architecture, gates):
  """Parameters of the all-Linear `shape` that compute the architecture `gates` selects: each
  skipped square Dense gets an identity kernel and a zero bias (`gates` may be traced)."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  for i, name in enumerate(gate_names(shape)):
    kernel, bias = f'{name}/dense/kernel', f'{name}/dense/bias'
    linear = gates[i] > 0
    flat[kernel] = jnp.where(linear, flat[kernel], jnp.eye(shape.hidden_size,
                                                           dtype=flat[kernel].dtype))
    flat[bias] = jnp.where(linear, flat[bias], jnp.zeros_like(flat[bias]))
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def elastic_params(super_params, model: BertClassifier, gates, sparsity=None):
  """The parameters with which `model` (of an all-Linear size shape) computes the sub-network
  of `gates`: sliced from the supernet, magnitude-pruned per slice with `sparsity` (unless
  None; it may be traced), then gated. Differentiable in `super_params`; gradients land in the slice, zeros elsewhere
  (pruned weights included: the masks pass gradients straight through)."""
  params = slice_params(super_params, model)
  if sparsity is not None:  # Straight through: pruned weights keep their gradient (supernet.py).
    masked = train.apply_masks(params, slice_masks(params, sparsity))
    params = jax.tree.map(lambda p, m: p + jax.lax.stop_gradient(m - p), params, masked)
  return gated_params(params, model.arch, gates)

