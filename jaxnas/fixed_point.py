"""The lab's fixed-point numerics: every Dense's input, weight and bias rounded to a fixed grid.

A fixed-point number of `width` bits with `frac_width` fractional bits is an integer q in
[-2^(width-1), 2^(width-1) - 1] read as q / 2^frac_width: Q4.4 (8/4) holds multiples of 1/16 in
[-8, 7.9375]. One power-of-two scale for every tensor, and no calibration, as the lab's
"integer" quantization pass did: `q = clamp(round(x * 2^f), min, max)`, rounding half to even
like `torch.round`. Embeddings and LayerNorm stay float, as in the lab.

`quantization.FixedPointEngine` trains with `fake_quantize` (a straight-through gradient
inside the clamp range, zero outside it), stores each quantized kernel and bias as its int8
integers with their scale, and serves through int8 x int8 dots when inputs and weights are
both quantized.
"""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnas.errors import UserError

MAX_WIDTH = 8  # The stored integers are int8.


@dataclasses.dataclass(frozen=True)
class FixedPoint:
  """Which tensors of each Dense are quantized, to `width` bits of which `frac_width` are
  fractional."""
  width: int = 8
  frac_width: int = 4
  inputs: bool = True
  weights: bool = True
  biases: bool = True

  def __post_init__(self):
    if not 2 <= self.width <= MAX_WIDTH:
      raise UserError(f'fixed-point width must be in [2, {MAX_WIDTH}] (stored as int8), got '
                      f'{self.width}')
    if not 0 <= self.frac_width <= 16:
      raise UserError(f'fixed-point frac_width must be in [0, 16], got {self.frac_width}')

  @property
  def scale(self) -> float:
    return 2.0 ** -self.frac_width

  @property
  def bounds(self) -> tuple[int, int]:
    return -2 ** (self.width - 1), 2 ** (self.width - 1) - 1

  def integers(self, x):
    """The integer q of each entry of `x` (in x's float dtype)."""
    low, high = self.bounds
    return jnp.clip(jnp.round(x * (1.0 / self.scale)), low, high)

  def fake_quantize(self, x):
    """q * scale in the forward pass; the gradient is 1 inside the clamp range, 0 outside."""
    low, high = self.bounds
    inside = (x >= low * self.scale) & (x <= high * self.scale)
    passthrough = jnp.where(inside, x, jax.lax.stop_gradient(x))
    return passthrough + jax.lax.stop_gradient(self.integers(x) * self.scale - passthrough)

  def describe(self) -> dict:
    return {'engine': 'fixed', **dataclasses.asdict(self),
            'format': f'Q{self.width - self.frac_width}.{self.frac_width}'}


class FixedPointDense(nn.Module):
  """`nn.Dense` with fixed-point numerics (same parameter names and shapes).

  With `serve`, `kernel` and `bias` hold the stored int8 integers of the tensors that
  `numerics` quantizes (float otherwise), and a quantized input meets a quantized kernel in
  an int8 x int8 dot (`int8_dot`) whose int32 sums are exact.
  """
  features: int
  numerics: FixedPoint
  serve: bool = False
  int8_dot: Callable = jax.lax.dot_general
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  dot_general_cls: Optional[Callable] = None  # Part of Dense's signature; unused here.

  @nn.compact
  def __call__(self, x):
    n = self.numerics
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x.astype(jnp.float32)
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    if not self.serve:
      fake = lambda t, on: n.fake_quantize(t) if on else t
      y = jax.lax.dot_general(fake(x, n.inputs), fake(kernel, n.weights), dims)
      return (y + fake(bias, n.biases)).astype(self.dtype)
    dequantize = lambda t, on: t.astype(jnp.float32) * n.scale if on else t
    if n.inputs and n.weights:
      sums = self.int8_dot(n.integers(x).astype(jnp.int8), kernel, dims,
                           preferred_element_type=jnp.int32)
      y = sums.astype(jnp.float32) * (n.scale * n.scale)
    else:
      y = jax.lax.dot_general(n.fake_quantize(x) if n.inputs else x,
                              dequantize(kernel, n.weights), dims)
    return (y + dequantize(bias, n.biases)).astype(self.dtype)
