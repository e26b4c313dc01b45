"""Sub-networks sliced from a supernet are those architectures with those weights."""

import types

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxnas import elastic, objectives, oneshot, pruning, quantization, train
from jaxnas.models import Architecture, BertClassifier, init_params

SETTINGS = dict(vocab_size=60, max_length=12, num_classes=2)
SUPERNET = Architecture(3, 4, 32, 48)
ARCHS = [
    Architecture(3, 4, 32, 48),
    Architecture(2, 2, 16, 24),
    Architecture(1, 4, 32, 16, identity=('layer_0/key', 'pooler')),
    Architecture(2, 8, 32, 48, identity=('layer_0/query', 'layer_1/value',
                                         'layer_1/attention_output')),
    Architecture(3, 2, 24, 24, identity=('layer_2/intermediate', 'layer_1/output')),
]


def reference_slice(super_params, arch: Architecture) -> dict:
  """The sub-network's parameters by explicit rules (`elastic.slice_params` derives them from
  the model's shapes): first layers; embeddings [:, :d]; square kernels [:d, :d]; the
  intermediate [:d, :f] and output [:f, :d] kernels; LayerNorm [:d]; classifier [:d]."""
  d, f = arch.hidden_size, arch.intermediate_size
  flat = flax.traverse_util.flatten_dict(super_params, sep='/')
  out = {}
  for path, value in flat.items():
    parts = path.split('/')
    if parts[0].startswith('layer_') and int(parts[0][6:]) >= arch.num_layers:
      continue
    if len(parts) > 2 and parts[-2] == 'dense' and not arch.is_linear('/'.join(parts[:-2])):
      continue
    leaf = parts[-1]
    if leaf == 'embedding':
      out[path] = value[:, :d]
    elif parts[0] == 'classifier':
      out[path] = value[:d] if leaf == 'kernel' else value
    elif parts[-3:-1] == ['intermediate', 'dense']:
      out[path] = value[:d, :f] if leaf == 'kernel' else value[:f]
    elif parts[-3:-1] == ['output', 'dense'] and leaf == 'kernel':
      out[path] = value[:f, :d]
    else:
      out[path] = value[:d, :d] if value.ndim == 2 else value[:d]
  return flax.traverse_util.unflatten_dict(out, sep='/')


@pytest.fixture(scope='module')
def super_params():
  """Supernet parameters with every leaf random (biases and LayerNorm too), so that a slice
  taken from the wrong place changes the output."""
  params = init_params(BertClassifier(SUPERNET, **SETTINGS), jax.random.key(0))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: (x + rng.normal(0, 0.05, x.shape)).astype(np.float32), params)


def tokens(seed=1):
  ids = np.random.default_rng(seed).integers(4, 60, (3, 12)).astype(np.int32)
  ids[0, 9:] = 0  # Padding.
  return jnp.asarray(ids)


@pytest.mark.parametrize('arch', ARCHS, ids=str)
def test_slices_are_the_leading_blocks(super_params, arch):
  model = BertClassifier(arch, **SETTINGS)
  sliced = elastic.slice_params(super_params, model)
  expected = reference_slice(super_params, arch)
  assert jax.tree.structure(sliced) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, sliced, expected)
  logits = model.apply({'params': sliced}, tokens())
  np.testing.assert_array_equal(logits, model.apply({'params': expected}, tokens()))


@pytest.mark.parametrize('sparsity', [0.0, 0.5])
@pytest.mark.parametrize('arch', ARCHS, ids=str)
def test_gated_shape_model_equals_the_architecture(super_params, arch, sparsity):
  """Identity choices as data (one program per size shape) compute the architecture itself,
  and the in-program masks are `pruning.magnitude_masks` of the slice."""
  model = BertClassifier(arch, **SETTINGS)
  sliced = elastic.slice_params(super_params, model)
  sliced = train.apply_masks(sliced, pruning.magnitude_masks(sliced, sparsity))
  expected = model.apply({'params': sliced}, tokens())
  shape_model = BertClassifier(elastic.size_shape(arch), **SETTINGS)
  run = jax.jit(lambda p, g, s: shape_model.apply(
      {'params': elastic.elastic_params(p, shape_model, g, s)}, tokens()))
  np.testing.assert_allclose(run(super_params, elastic.gates_of(arch), jnp.float32(sparsity)),
                             expected, atol=1e-5)


@pytest.mark.parametrize('arch', ARCHS[1:], ids=str)
def test_gradients_land_in_the_slice(super_params, arch):
  model = BertClassifier(arch, **SETTINGS)
  shape_model = BertClassifier(elastic.size_shape(arch), **SETTINGS)
  loss = lambda logits: jnp.sum(jnp.sin(logits))
  super_grads = jax.grad(lambda p: loss(shape_model.apply(
      {'params': elastic.elastic_params(p, shape_model, elastic.gates_of(arch))}, tokens())))(
          super_params)
  sub_grads = jax.grad(lambda p: loss(model.apply({'params': p}, tokens())))(
      elastic.slice_params(super_params, model))
  flat_super = flax.traverse_util.flatten_dict(super_grads, sep='/')
  flat_sub = flax.traverse_util.flatten_dict(sub_grads, sep='/')
  for path, grad in flat_super.items():
    grad = np.asarray(grad)
    if path in flat_sub:
      block = tuple(slice(0, n) for n in flat_sub[path].shape)
      np.testing.assert_allclose(grad[block], flat_sub[path], atol=1e-5, err_msg=path)
      grad = grad.copy()
      grad[block] = 0.0
    assert not np.any(grad), f'{path}: gradient outside the sub-network'


def test_gradients_of_masked_slices_pass_straight_through(super_params):
  arch = ARCHS[1]
  shape_model = BertClassifier(arch, **SETTINGS)
  grads = jax.grad(lambda p: jnp.sum(shape_model.apply(
      {'params': elastic.elastic_params(p, shape_model, elastic.gates_of(arch), 0.5)},
      tokens())))(super_params)
  kernel = np.asarray(grads['layer_0']['intermediate']['dense']['kernel'])[:16, :24]
  assert np.mean(kernel != 0) > 0.9  # Pruned weights too.


def test_an_architecture_outside_the_supernet_is_refused(super_params):
  with pytest.raises(Exception, match='not a sub-network'):
    elastic.slice_params(super_params, BertClassifier(Architecture(2, 2, 64, 24), **SETTINGS))


@pytest.mark.parametrize('engine', ('aqt', 'qwix', 'fixed'))
@pytest.mark.parametrize('arch', ARCHS[2:], ids=str)
def test_served_shape_program_is_the_served_architecture(super_params, engine, arch):
  """One-shot scoring's served model of a size shape with Identity choices as data gives the
  served architecture's logits, size and sparsity (50% of weights pruned, 50% of activations)."""
  config = ml_collections.ConfigDict({'compression': dict(
      weight_sparsity=0.5, prune_scope='local', activation_sparsity=0.5,
      activation_prune_scope='token')})
  exp = types.SimpleNamespace(config=config, engine=quantization.get_engine(
      engine, dict(width=8, frac_width=4, inputs=True, weights=True, biases=True)),
                              build_model=lambda a: BertClassifier(a, **SETTINGS))
  scorer = oneshot.ShapeScorer(exp, super_params, objectives.Objectives.parse('accuracy', 0))
  apply_fn, variables, record = scorer.served(arch)
  model = BertClassifier(arch, **SETTINGS, activation_sparsity=0.5)
  params = elastic.slice_params(super_params, model)
  params = train.apply_masks(params, pruning.magnitude_masks(params, 0.5))
  stored = exp.engine.convert(model, params)
  expected = jax.jit(exp.engine.serving_apply(model))(stored, tokens())
  # Qwix's programs differ in their float rounding, which moved one int8 rounding: 1.2e-4.
  np.testing.assert_allclose(jax.jit(apply_fn)(variables, tokens()), expected,
                             atol=5e-4 if engine == 'qwix' else 1e-5)
  assert record['model_bytes'] == quantization.tree_bytes(stored)
  assert record['sparsity'] == pruning.measured_sparsity(params)['overall']
