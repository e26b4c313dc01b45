import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import train
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier, count_params, prune_activations

IDS = jnp.array([[2, 11, 12, 13, 3, 0, 0, 0], [2, 14, 3, 0, 0, 0, 0, 0]], jnp.int32)


def params_of(arch, vocab_size=50):
  return train.init_params(BertClassifier(arch, vocab_size, 8), jax.random.key(0), 8)


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


def test_padding_does_not_change_logits():
  arch = Architecture(2, 2, 64, 128)
  model = BertClassifier(arch, 50, 16)
  params = train.init_params(model, jax.random.key(0), 16)
  short = model.apply({'params': params}, IDS)
  padded = model.apply({'params': params}, jnp.pad(IDS, ((0, 0), (0, 8))))
  np.testing.assert_allclose(short, padded, atol=1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_layers=2, num_heads=3, hidden_size=128, intermediate_size=512), 'not divisible'),
    (dict(num_layers=0, num_heads=2, hidden_size=128, intermediate_size=512), 'positive'),
    (dict(num_layers=2, num_heads=2, hidden_size=128, intermediate_size=512,
          identity=('layer_5/query',)), 'unknown identity'),
])
def test_impossible_architectures_are_rejected(kwargs, message):
  with pytest.raises(UserError, match=message):
    Architecture(**kwargs)


def test_activation_pruning_zeroes_the_smallest_inputs_of_each_dense():
  x = jax.random.normal(jax.random.key(0), (4, 8, 64))
  pruned = prune_activations(x, 0.5)
  assert float(jnp.mean(pruned == 0)) == pytest.approx(0.5, abs=0.01)
  kept = jnp.abs(x)[pruned != 0]
  assert float(kept.min()) >= float(jnp.abs(x)[pruned == 0].max())
  arch = Architecture(2, 2, 64, 128)
  params = params_of(arch)
  dense = BertClassifier(arch, 50, 8).apply({'params': params}, IDS)
  sparse = BertClassifier(arch, 50, 8, activation_sparsity=0.5).apply({'params': params}, IDS)
  assert not np.allclose(dense, sparse)
