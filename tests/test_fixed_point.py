"""The lab's fixed-point numerics against a NumPy reference of its formula."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import toy_split
from jaxnas import config_checks, fixed_point, models, quantization
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier

Q4_4 = fixed_point.FixedPoint(width=8, frac_width=4)


def reference(x, width, frac_width):
  """q = clamp(round(x * 2^f), -2^(w-1), 2^(w-1) - 1) / 2^f, rounding half to even as
  torch.round does (np.round does too)."""
  scaled = np.round(np.asarray(x, np.float64) * 2.0 ** frac_width)
  return np.clip(scaled, -2 ** (width - 1), 2 ** (width - 1) - 1) / 2.0 ** frac_width


# Ties (0.5/16 rounds to 0, 1.5/16 to 2/16, -2.5/16 to -2/16), the grid, and both clamps.
VALUES = np.array([0.0, 0.5 / 16, 1.5 / 16, -2.5 / 16, 0.3, -0.049, 7.9, 7.96875, 8.0, 100.0,
                   -7.97, -8.0, -8.03125, -1e4], np.float32)


@pytest.mark.parametrize('width,frac_width', [(8, 4), (8, 6), (6, 3), (4, 0)])
def test_quantization_matches_the_reference(width, frac_width):
  numerics = fixed_point.FixedPoint(width, frac_width)
  x = np.concatenate([VALUES, np.random.default_rng(0).normal(0, 3, 1000).astype(np.float32)])
  expected = reference(x, width, frac_width)
  np.testing.assert_array_equal(numerics.fake_quantize(jnp.asarray(x)), expected)
  np.testing.assert_array_equal(numerics.integers(jnp.asarray(x)) * numerics.scale, expected)


def test_q4_4_ties_and_clamps():
  got = np.asarray(Q4_4.fake_quantize(jnp.asarray(VALUES)))
  np.testing.assert_array_equal(
      got, [0, 0, 2 / 16, -2 / 16, 5 / 16, -1 / 16, 7.875, 7.9375, 7.9375, 7.9375, -8,
            -8, -8, -8])


def test_straight_through_gradient_inside_the_clamp_range_only():
  grad = jax.grad(lambda x: jnp.sum(Q4_4.fake_quantize(x) * jnp.arange(x.size)))(
      jnp.asarray(VALUES))
  inside = (VALUES >= -8) & (VALUES <= 7.9375)
  np.testing.assert_array_equal(grad, np.where(inside, np.arange(VALUES.size), 0))


def dense_reference(x, kernel, bias, width=8, frac_width=4):
  q = lambda t: reference(t, width, frac_width)
  return q(x) @ q(kernel) + q(bias)


@pytest.mark.parametrize('serve', [False, True])
def test_dense_matches_the_reference(serve):
  rng = np.random.default_rng(1)
  x = rng.normal(0, 2, (3, 5, 40)).astype(np.float32)
  kernel = rng.normal(0, 0.3, (40, 24)).astype(np.float32)
  bias = rng.normal(0, 0.5, (24,)).astype(np.float32)
  dense = fixed_point.FixedPointDense(24, Q4_4, serve=serve,
                                      int8_dot=quantization.int8_dot_in_float32)
  if serve:  # The stored form: the integers.
    kernel_in, bias_in = (np.asarray(Q4_4.integers(jnp.asarray(t)), np.int8)
                          for t in (kernel, bias))
  else:
    kernel_in, bias_in = kernel, bias
  got = dense.apply({'params': {'kernel': kernel_in, 'bias': bias_in}}, x)
  np.testing.assert_allclose(got, dense_reference(x, kernel, bias), rtol=0, atol=1e-5)


@pytest.mark.parametrize('tensors', [dict(), dict(inputs=False), dict(biases=False),
                                     dict(weights=False)])
def test_served_model_matches_the_qat_model_and_stores_integers(tensors):
  engine = quantization.FixedPointEngine(fixed_point.FixedPoint(8, 4, **tensors))
  model = BertClassifier(Architecture(2, 2, 32, 64, identity=('layer_0/key',)), 40, 16)
  params = models.init_params(model, jax.random.key(0))
  params = jax.tree.map(lambda p: p * 20, params)  # Weights of the size Q4.4 can see.
  ids = np.stack([np.pad(t, (0, 16 - len(t))) for t in toy_split(6, 0, 16).token_ids])
  stored = engine.convert(model, params)
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  quantized = {p for p in flat if p.endswith('/dense/kernel') and engine.spec.weights
               or p.endswith('/dense/bias') and engine.spec.biases}
  assert set(stored['int8']) == quantized
  for path in quantized:
    q = stored['int8'][path]
    assert q['qvalue'].dtype == np.int8 and float(q['scale']) == 1 / 16
    np.testing.assert_array_equal(q['qvalue'] / 16, reference(flat[path], 8, 4))
  served = engine.serving_apply(model)(stored, ids)
  qat = engine.training_model(model).apply({'params': params}, ids)
  np.testing.assert_allclose(served, qat, atol=1e-4)
  assert np.ptp(np.asarray(served)) > 0.1  # Not a constant function.


def test_engine_describes_its_numerics_and_rejects_wider_than_int8():
  spec = quantization.get_engine('fixed', dict(width=6, frac_width=3)).describe()
  assert spec['format'] == 'Q3.3' and spec['width'] == 6 and spec['engine'] == 'fixed'
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.compression.fixed_point.width = 9
  with pytest.raises(UserError, match='fixed_point: fixed-point width'):
    config_checks.validate_config(config)


def test_per_tensor_activation_pruning_uses_one_threshold():
  x = jnp.asarray([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
  per_token = models.prune_activations(x, 0.5)
  per_tensor = models.prune_activations(x, 0.5, 'tensor')
  np.testing.assert_array_equal(per_token, [[0, 0, 3, 4], [0, 0, 30, 40]])
  np.testing.assert_array_equal(per_tensor, [[0, 0, 0, 0], [10, 20, 30, 40]])


def test_served_model_computes_int8_matmuls():
  engine = quantization.FixedPointEngine(Q4_4, int8_dot='native')
  model = BertClassifier(Architecture(2, 2, 32, 64, identity=('layer_0/key',)), 40, 16)
  stored = engine.convert(model, models.init_params(model, jax.random.key(0)))
  hlo = jax.jit(engine.serving_apply(model)).lower(stored, np.ones((2, 16), np.int32)).as_text()
  int8_dots = [line for line in hlo.splitlines() if 'dot_general' in line and 'xi8>' in line]
  assert len(int8_dots) == 5 + 6 + 2  # 6 Dense a layer, 1 identity; pooler, classifier.


def test_a_fixed_point_search_names_its_numerics_and_its_model_serves_as_made(tmp_path,
                                                                               test_config):
  from jaxnas import runner  # pylint: disable=g-import-not-at-top
  config = test_config.copy_and_resolve_references()
  config.compression.quant_engine = 'fixed'
  config.compression.activation_sparsity = 0.5
  config.compression.activation_prune_scope = 'tensor'
  results = runner.run(runner.RunSpec('compress', 'tpe', 1, str(tmp_path), '', 'test'), config)
  numerics = {'engine': 'fixed', 'width': 8, 'frac_width': 4, 'inputs': True, 'weights': True,
              'biases': True, 'format': 'Q4.4', 'int8_dot': quantization.int8_dot_path()}
  assert results['runs']['compress']['compression']['numerics'] == numerics
  best = results['runs']['compress']['best']
  assert best['numerics'] == numerics and best['activation_prune_scope'] == 'tensor'
  assert ('Compression: Q4.4 fixed point (8 bits, 4 fractional) on Dense inputs, weights, '
          'biases; 50% of weights pruned (local); 50% of Dense inputs pruned, one threshold '
          'per tensor' in (tmp_path / 'summary.md').read_text())
  # Evaluated with a config of another engine, the saved model serves with its own numerics.
  evaluated = runner.run(runner.RunSpec('evaluate', 'tpe', 1, str(tmp_path), '', 'test',
                                        checkpoint=best['model_dir']), test_config)
  assert evaluated['numerics'] == numerics
  assert evaluated['int8_test_accuracy'] == pytest.approx(best['int8_test_accuracy'], abs=1e-6)
