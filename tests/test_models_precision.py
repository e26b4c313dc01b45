"""The fast dropout mask and bfloat16 mixed precision of the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import train
from jaxnas.models import Architecture, BertClassifier, Dropout, dropout_keep_mask

ARCH = Architecture(1, 2, 16, 32)
IDS = jnp.array([[2, 11, 12, 13, 3, 0, 0, 0], [2, 14, 3, 0, 0, 0, 0, 0]], jnp.int32)


@pytest.mark.parametrize('shape', [(4, 2, 64, 64), (3, 33)])
def test_keep_mask_is_bernoulli_with_its_exact_keep_probability(shape):
  keep, keep_prob = dropout_keep_mask(jax.random.key(0), 0.1, shape)
  assert keep.shape == shape and keep.dtype == jnp.bool_
  assert keep_prob == round(0.9 * 2 ** 16) / 2 ** 16
  assert float(keep.mean()) == pytest.approx(0.9, abs=5 / np.sqrt(keep.size))
  again, _ = dropout_keep_mask(jax.random.key(0), 0.1, shape)
  other, _ = dropout_keep_mask(jax.random.key(1), 0.1, shape)
  assert bool(jnp.all(keep == again)) and not bool(jnp.all(keep == other))


def test_dropout_is_unbiased_and_off_when_deterministic():
  x = jnp.ones((256, 256))
  rngs = {'dropout': jax.random.key(0)}
  dropped = Dropout(0.1).apply({}, x, False, rngs=rngs)
  _, keep_prob = dropout_keep_mask(jax.random.key(0), 0.1, x.shape)
  assert set(np.unique(dropped).tolist()) == {0.0, np.float32(1 / keep_prob)}
  assert float(dropped.mean()) == pytest.approx(1.0, abs=0.01)
  assert bool(jnp.all(Dropout(0.1).apply({}, x, True) == x))


def test_bfloat16_computes_in_bf16_with_float32_master_weights():
  f32, bf16 = (BertClassifier(ARCH, 40, 8, dtype=d) for d in ('float32', 'bfloat16'))
  params = train.init_params(f32, jax.random.key(0), 8)

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
