"""The bench's reading of compiled programs."""

import jax
import jax.numpy as jnp

from jaxnas.bench import measure


def test_dot_operand_types_counts_each_dot_of_a_compiled_program():
  def program(x, w, x8, w8):
    float_dot = jnp.tanh(x @ w)  # A dot fused with its neighbours.
    int_dot = jax.lax.dot_general(x8, w8, (((1,), (0,)), ((), ())),
                                  preferred_element_type=jnp.int32)
    return float_dot, int_dot

  args = (jnp.ones((64, 32)), jnp.ones((32, 16)), jnp.ones((64, 32), jnp.int8),
          jnp.ones((32, 16), jnp.int8))
  text = jax.jit(program).lower(*args).compile().as_text()
  assert measure.dot_operand_types(text) == {'f32 x f32': 1, 's8 x s8': 1}
