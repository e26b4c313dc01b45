import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import models
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier, count_params, prune_activations

IDS = jnp.array([[2, 11, 12, 13, 3, 0, 0, 0], [2, 14, 3, 0, 0, 0, 0, 0]], jnp.int32)


def params_of(arch, vocab_size=50):
  return models.init_params(BertClassifier(arch, vocab_size, 8), jax.random.key(0))


def test_every_size_choice_changes_the_parameter_count():
  base = Architecture(2, 2, 64, 128)
  counts = {name: count_params(params_of(arch)) for name, arch in {
      'base': base, 'layers': Architecture(4, 2, 64, 128),
      'hidden': Architecture(2, 2, 96, 128), 'intermediate': Architecture(2, 2, 64, 256)}.items()}
  assert len(set(counts.values())) == 4
  d, f, v = 64, 128, 50
  per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
  embeddings = (v + 8 + 2) * d + 2 * d
  head = (d * d + d) + (d * 2 + 2)
  assert counts['base'] == embeddings + 2 * per_layer + head


def test_heads_change_the_computation_not_the_parameters():
  two, four = Architecture(2, 2, 64, 128), Architecture(2, 4, 64, 128)
  params = params_of(two)
  assert count_params(params) == count_params(params_of(four))
  logits = [BertClassifier(a, 50, 8).apply({'params': params}, IDS) for a in (two, four)]
  assert not np.allclose(logits[0], logits[1])


def test_identity_layers_have_no_parameters():
  arch = Architecture(2, 2, 64, 128, identity=('layer_1/query', 'layer_0/value', 'pooler'))
  params = params_of(arch)
  assert 'query' not in params['layer_1'] and 'value' not in params['layer_0']
  assert 'pooler' not in params and 'query' in params['layer_0']
  assert count_params(params_of(Architecture(2, 2, 64, 128))) - count_params(params) == 3 * 64 * 65


def test_square_feed_forward_identity_removes_its_dense_and_changes_the_output():
  arch = Architecture(2, 2, 64, 64, identity=('layer_0/intermediate', 'layer_1/output'))
  params = params_of(arch)
  assert 'intermediate' not in params['layer_0'] and 'output' in params['layer_0']
  assert 'output' not in params['layer_1'] and 'intermediate' in params['layer_1']
  full = params_of(Architecture(2, 2, 64, 64))
  assert count_params(full) - count_params(params) == 2 * 64 * 65
  logits = BertClassifier(arch, 50, 8).apply({'params': params}, IDS)
  assert logits.shape == (IDS.shape[0], 2) and np.all(np.isfinite(logits))


def test_padding_does_not_change_logits():
  arch = Architecture(2, 2, 64, 128)
  model = BertClassifier(arch, 50, 16)
  params = models.init_params(model, jax.random.key(0))
  short = model.apply({'params': params}, IDS)
  padded = model.apply({'params': params}, jnp.pad(IDS, ((0, 0), (0, 8))))
  np.testing.assert_allclose(short, padded, atol=1e-5)


def test_host_init_matches_flax_init_in_structure_and_distribution():
  arch = Architecture(2, 2, 64, 128)
  model = BertClassifier(arch, 50, 8)
  host = flax.traverse_util.flatten_dict(models.init_params(model, jax.random.key(0)), sep='/')
  flax_init = flax.traverse_util.flatten_dict(
      model.init(jax.random.key(0), IDS)['params'], sep='/')
  assert {p: (v.shape, v.dtype) for p, v in host.items()} == {
      p: (v.shape, v.dtype) for p, v in flax_init.items()}
  for path, value in host.items():
    if path.endswith(('/kernel', '/embedding')):
      assert np.std(value) == pytest.approx(models.INIT_STDDEV, rel=0.2), path
      assert abs(np.mean(value)) < 0.01, path
    else:  # LayerNorm scales are one; biases are zero (in flax's init as well).
      np.testing.assert_array_equal(value, flax_init[path])
  same = models.init_params(model, jax.random.key(0))['layer_0']['query']['dense']['kernel']
  other = models.init_params(model, jax.random.key(1))['layer_0']['query']['dense']['kernel']
  np.testing.assert_array_equal(host['layer_0/query/dense/kernel'], same)
  assert not np.allclose(same, other)


def test_host_init_of_a_parameter_does_not_depend_on_other_layers():
  full = params_of(Architecture(2, 2, 64, 128))
  fewer = params_of(Architecture(2, 2, 64, 128, identity=('layer_0/query', 'layer_0/key')))
  np.testing.assert_array_equal(full['layer_1']['value']['dense']['kernel'],
                                fewer['layer_1']['value']['dense']['kernel'])
  assert not np.allclose(full['layer_1']['value']['dense']['kernel'],
                         full['layer_1']['key']['dense']['kernel'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_layers=2, num_heads=3, hidden_size=128, intermediate_size=512), 'not divisible'),
    (dict(num_layers=0, num_heads=2, hidden_size=128, intermediate_size=512), 'positive'),
    (dict(num_layers=2, num_heads=2, hidden_size=128, intermediate_size=512,
          identity=('layer_5/query',)), 'unknown identity'),
])
def test_impossible_architectures_are_rejected(kwargs, message):
  with pytest.raises(UserError, match=message):
    Architecture(**kwargs)


def test_activation_pruning_zeroes_the_smallest_inputs_of_each_token():
  x = jax.random.normal(jax.random.key(0), (4, 8, 64))
  pruned = prune_activations(x, 0.5)
  assert np.all(np.sum(pruned == 0, axis=-1) == 32)  # Half of every token's vector.
  magnitude = jnp.abs(x)
  kept_min = jnp.min(jnp.where(pruned != 0, magnitude, jnp.inf), axis=-1)
  pruned_max = jnp.max(jnp.where(pruned == 0, magnitude, -jnp.inf), axis=-1)
  assert np.all(kept_min >= pruned_max)
  arch = Architecture(2, 2, 64, 128)
  params = params_of(arch)
  dense = BertClassifier(arch, 50, 8).apply({'params': params}, IDS)
  sparse = BertClassifier(arch, 50, 8, activation_sparsity=0.5).apply({'params': params}, IDS)
  assert not np.allclose(dense, sparse)


def test_with_activation_pruning_a_review_scores_the_same_in_any_batch():
  arch = Architecture(2, 2, 64, 128)
  model = BertClassifier(arch, 50, 16, activation_sparsity=0.5)
  params = models.init_params(model, jax.random.key(0))
  review = jnp.array([[2, 11, 12, 13, 14, 15, 3, 0]], jnp.int32)  # One padded position.
  others = jax.random.randint(jax.random.key(1), (3, 8), 4, 50)
  alone = model.apply({'params': params}, review)
  batches = [jnp.concatenate([review, others]),  # Beside other reviews,
             jnp.concatenate([review, jnp.zeros((7, 8), jnp.int32)]),  # padding rows,
             jnp.pad(review, ((0, 0), (0, 8)))]  # and more padded positions.
  for batch in batches:
    np.testing.assert_allclose(model.apply({'params': params}, batch)[:1], alone, atol=1e-5)


def test_a_dropout_mask_block_is_that_block_of_the_full_mask():
  seed = jnp.array([7, 9], jnp.uint32)
  full, _ = models.dropout_keep_mask(seed, 3, 0.5, (2, 4, 6, 6))
  block, _ = models.dropout_keep_mask(seed, 3, 0.5, (2, 4, 1, 6), full_shape=(2, 4, 6, 6))
  np.testing.assert_array_equal(block, full[:, :, :1])
  assert 0.3 < full.mean() < 0.7


@pytest.mark.parametrize('identity', [(), ('layer_1/query', 'layer_1/attention_output')])
@pytest.mark.parametrize('dropout', [False, True])
def test_last_block_computes_the_first_token_exactly_as_the_whole_block(identity, dropout):
  """In eval and in training: the same output and gradients, dropout masks included."""
  arch = Architecture(2, 2, 64, 128, identity=identity)
  params = params_of(arch)['layer_1']
  x = jax.random.normal(jax.random.key(1), (2, 8, 64))
  bias = jnp.where(IDS == 0, jnp.finfo(jnp.float32).min, 0.0)[:, None, None, :]
  seed = jnp.array([5, 6], jnp.uint32) if dropout else None
  dense = lambda features, linear=True, name=None: models.Projection(features, linear,
                                                                     name=name)

  def first_token(params, first_token_only):
    block = models.EncoderLayer(arch, 1, 0.3, 0.3, dense, first_token_only=first_token_only)
    return block.apply({'params': params}, x, bias, seed)[:, :1]

  whole, first = first_token(params, False), first_token(params, True)
  np.testing.assert_allclose(first, whole, rtol=1e-5, atol=1e-5)
  if dropout:  # Its masks did drop something.
    assert not np.allclose(whole, models.EncoderLayer(arch, 1, 0.3, 0.3, dense).apply(
        {'params': params}, x, bias, None)[:, :1])
  grads = [jax.grad(lambda p, f=f: jnp.sum(first_token(p, f) ** 2))(params) for f in (False, True)]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                         *grads)
