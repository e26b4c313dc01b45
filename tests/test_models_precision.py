"""The fast dropout mask and bfloat16 mixed precision of the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import models
from jaxnas.models import Architecture, BertClassifier, Dropout, dropout_keep_mask

ARCH = Architecture(1, 2, 16, 32)
IDS = jnp.array([[2, 11, 12, 13, 3, 0, 0, 0], [2, 14, 3, 0, 0, 0, 0, 0]], jnp.int32)


SEED = jnp.array([7, 9], jnp.uint32)


@pytest.mark.parametrize('shape', [(4, 2, 64, 64), (3, 33)])
def test_keep_mask_is_bernoulli_with_its_exact_keep_probability(shape):
  keep, keep_prob = dropout_keep_mask(SEED, 0, 0.1, shape)
  assert keep.shape == shape and keep.dtype == jnp.bool_
  assert keep_prob == round(0.9 * 2 ** 32) / 2 ** 32
  assert float(keep.mean()) == pytest.approx(0.9, abs=5 / np.sqrt(keep.size))
  again, _ = dropout_keep_mask(SEED, 0, 0.1, shape)
  other_seed, _ = dropout_keep_mask(SEED + 1, 0, 0.1, shape)
  other_stream, _ = dropout_keep_mask(SEED, 1, 0.1, shape)
  assert bool(jnp.all(keep == again))
  assert not bool(jnp.all(keep == other_seed)) and not bool(jnp.all(keep == other_stream))


def test_keep_masks_are_independent_across_neighbours_streams_and_seeds():
  shape, p = (64, 4096), 0.5
  keep = np.asarray(dropout_keep_mask(SEED, 0, p, shape)[0], np.float64)
  others = [np.asarray(dropout_keep_mask(seed, stream, p, shape)[0], np.float64)
            for seed, stream in ((SEED, 1), (SEED + 1, 0), (SEED + 2, 0))]
  tolerance = 5 / np.sqrt(keep.size)
  both = lambda a, b: float(np.mean(a * b))  # P(both kept) = 1/4 when independent.
  assert both(keep[:, 1:], keep[:, :-1]) == pytest.approx(0.25, abs=tolerance)
  assert both(keep[1:], keep[:-1]) == pytest.approx(0.25, abs=tolerance)
  for other in others:
    assert both(keep, other) == pytest.approx(0.25, abs=tolerance)
    for shift in (1, 7, 4096):  # Not a shifted copy either.
      assert both(keep.ravel()[shift:], other.ravel()[:-shift]) == pytest.approx(0.25,
                                                                              abs=tolerance)


def test_dropout_is_unbiased_and_off_without_a_seed():
  x = jnp.ones((256, 256))
  dropped = Dropout(0.1).apply({}, x, SEED)
  _, keep_prob = dropout_keep_mask(SEED, 0, 0.1, x.shape)
  assert set(np.unique(dropped).tolist()) == {0.0, np.float32(1 / keep_prob)}
  assert float(dropped.mean()) == pytest.approx(1.0, abs=0.01)
  assert bool(jnp.all(Dropout(0.1).apply({}, x, None) == x))


def test_each_dropout_site_draws_its_own_mask_and_each_pass_a_new_one():
  model = BertClassifier(ARCH, 40, 8, dropout_rate=0.5, attention_dropout_rate=0.5)
  params = models.init_params(model, jax.random.key(0))
  ids = jnp.tile(IDS, (64, 1))
  _, state = model.apply({'params': params}, ids, False, rngs={'dropout': jax.random.key(1)},
                         capture_intermediates=lambda module, _: isinstance(module, Dropout),
                         mutable=['intermediates'])
  outputs = [np.asarray(y[0]) for y in jax.tree_util.tree_leaves(
      state['intermediates'], is_leaf=lambda x: isinstance(x, tuple))]
  zero_patterns = {tuple((y == 0).reshape(-1)[:4096]) for y in outputs if y.ndim == 3}
  assert len(outputs) == 2 + 3 * ARCH.num_layers and len(zero_patterns) == 3
  logits = [model.apply({'params': params}, ids, False, rngs={'dropout': jax.random.key(k)})
            for k in (1, 1, 2)]
  np.testing.assert_array_equal(logits[0], logits[1])
  assert not np.array_equal(logits[0], logits[2])


def test_bfloat16_computes_in_bf16_with_float32_master_weights():
  f32, bf16 = (BertClassifier(ARCH, 40, 8, dtype=d) for d in ('float32', 'bfloat16'))
  params = models.init_params(f32, jax.random.key(0))

  @jax.jit
  def run(params):
    logits = [m.apply({'params': params}, IDS) for m in (f32, bf16)]
    loss = lambda p: jnp.sum(bf16.apply({'params': p}, IDS) ** 2)
    return logits, jax.grad(loss)(params)

  (logits, logits_bf16), grads = run(params)
  assert logits_bf16.dtype == jnp.float32
  np.testing.assert_allclose(logits_bf16, logits, atol=3e-2)
  assert not np.array_equal(logits_bf16, logits)  # It did compute in bfloat16.
  for x in jax.tree_util.tree_leaves(grads):
    assert x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
