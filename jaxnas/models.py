"""A BERT-style encoder classifier whose shape is set by an `Architecture`.

Post-LayerNorm blocks, exact GELU feed-forward, dropout, a [CLS] pooler with tanh and a
classifier head. Each square Dense (query, key, value and attention output of each layer, the
pooler, and where hidden_size == intermediate_size the two feed-forward Dense layers too, as
the lab's rule gives them) is either a Dense or the identity, as the architecture says. A
quantization engine plugs in through `dot_general_cls` (used by every Dense) and
`embedding_quantizer` (applied to the embedding tables), or replaces every Dense with its own
module (`dense_cls`); activation pruning of each Dense input is optional, per token or per
tensor.

Mixed precision: with `dtype='bfloat16'` activations and matmuls are bfloat16 while the
parameters (the master weights the optimizer updates) and their gradients stay float32;
softmax, LayerNorm statistics and the logits are computed in float32.
"""

import dataclasses
import zlib
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.errors import UserError
from jaxnas.tokenizer import PAD_ID

SQUARE_PROJECTIONS = ('query', 'key', 'value', 'attention_output')
FEED_FORWARD = ('intermediate', 'output')  # Square when hidden_size == intermediate_size.
INIT_STDDEV = 0.02  # Of every Dense kernel and embedding table, as in BERT.


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One point of the search space. `identity` names the square Dense layers that are skipped.

  Names are 'layer_{i}/{projection}' for projection in SQUARE_PROJECTIONS (and FEED_FORWARD
  when those are square), and 'pooler'.
  """
  num_layers: int
  num_heads: int
  hidden_size: int
  intermediate_size: int
  identity: tuple[str, ...] = ()

  def __post_init__(self):
    if min(self.num_layers, self.num_heads, self.hidden_size, self.intermediate_size) < 1:
      raise UserError(f'architecture sizes must be positive: {self}')
    if self.hidden_size % self.num_heads:
      raise UserError(f'hidden_size={self.hidden_size} is not divisible by '
                      f'num_heads={self.num_heads}')
    unknown = set(self.identity) - set(square_dense_names(self.num_layers, self.hidden_size,
                                                          self.intermediate_size))
    if unknown:
      raise UserError(f'unknown identity layer name(s) {sorted(unknown)}')
    object.__setattr__(self, 'identity', tuple(sorted(self.identity)))

  def is_linear(self, name: str) -> bool:
    return name not in self.identity

  def to_dict(self):
    return dataclasses.asdict(self) | {'identity': list(self.identity)}

  @classmethod
  def from_dict(cls, d):
    return cls(**(dict(d) | {'identity': tuple(d.get('identity', ()))}))


def square_dense_names(num_layers: int, hidden_size: int, intermediate_size: int) -> list[str]:
  """The Dense layers with equal input and output sizes, which may be the identity."""
  projections = SQUARE_PROJECTIONS + (FEED_FORWARD if hidden_size == intermediate_size else ())
  return [f'layer_{i}/{p}' for i in range(num_layers) for p in projections] + ['pooler']


def _mix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer: a bijection of uint32 that flips about half the output
  bits for any flipped input bit."""
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def dropout_keep_mask(seed: jax.Array, stream: int, rate: float, shape,
                      full_shape=None) -> tuple[jax.Array, float]:
  """A Bernoulli(1 - rate) keep mask and its exact keep probability.

  The random bits are a counter-based hash: element i of the mask hashes i with a key made
  of `seed` (two uint32 words, drawn once per forward pass) and `stream` (a number per
  dropout site). XLA fuses the hash with its use, so a mask costs a few integer operations
  per element and no memory: on this project's CPU a 4M-element attention mask took 2 ms,
  against 28 ms for XLA's Philox (RngBitGenerator) and about 100 ms for
  `jax.random.bernoulli` with threefry keys. Two hash rounds keep the masks of different
  keys from being shifted copies of each other. The keep probability is 1 - rate rounded to
  a multiple of 2^-32; dropout scales by its exact value, so it stays unbiased. Counters wrap
  at 2^32 elements per mask.

  With `full_shape`, the mask is the leading `shape` block (every index from 0) of the mask of
  a `full_shape` array: elements keep their counters, i.e. their positions in the full array.
  """
  threshold = min(round((1.0 - rate) * 2 ** 32), 2 ** 32 - 1)
  first = _mix32(seed[0].astype(jnp.uint32) ^ _mix32(jnp.uint32(stream)))
  second = _mix32(seed[1].astype(jnp.uint32) ^ first)
  strides = np.cumprod((1,) + tuple(full_shape or shape)[:0:-1])[::-1]  # Row-major, in elements.
  counter = sum(jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
                for axis, stride in enumerate(strides))
  bits = _mix32(_mix32(counter + first) ^ second)
  return bits < jnp.uint32(threshold), threshold / 2 ** 32


def dropout_seed(module: nn.Module, deterministic: bool) -> Optional[jax.Array]:
  """The seed of every `Dropout` in one forward pass; None turns dropout off."""
  return None if deterministic else jax.random.bits(module.make_rng('dropout'), (2,), jnp.uint32)


class Dropout(nn.Module):
  """Inverted dropout like `nn.Dropout`, with the cheaper mask of `dropout_keep_mask`; its
  stream is a hash of the module's path, so every site draws its own mask. With `full_shape`,
  `x` is the leading block of a `full_shape` array and gets that block of its mask."""
  rate: float

  @nn.compact
  def __call__(self, x, seed: Optional[jax.Array], full_shape=None):
    if seed is None or self.rate == 0.0:
      return x
    stream = zlib.crc32('/'.join(self.path).encode())
    keep, keep_prob = dropout_keep_mask(seed, stream, self.rate, x.shape, full_shape)
    return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


BISECTION_STEPS = 24  # Threshold resolution: the vector's largest |x| / 2^24.


ACTIVATION_PRUNE_SCOPES = ('token', 'tensor')


def prune_activations(x, sparsity: float, scope: str = 'token'):
  """Zeroes the `sparsity` fraction of each activation vector's entries (the last axis: one
  token's, or the pooler's one row) with the smallest |x|; with scope 'tensor', of the whole
  tensor's entries, padded positions included (the lab's pass: one L1 threshold per tensor).

  One threshold per token by default, not per batch tensor: a review then scores the same
  alone, beside other reviews or beside padding rows, and padded positions neither count nor
  matter (the attention mask already keeps them from real tokens). The threshold is found by
  bisection, the largest value that keeps enough entries: a few elementwise passes over the
  vector, where a sort (a quantile) or `lax.top_k` made served int8 scoring 15x slower on a
  CPU.
  """
  per_tensor = scope == 'tensor'
  size = x.size if per_tensor else x.shape[-1]
  keep = max(1, size - round(sparsity * size))
  # The mask is piecewise constant in x: no gradient flows through the search.
  magnitude = jax.lax.stop_gradient(jnp.abs(x).astype(jnp.float32))

  def kept(threshold):  # Entries at or above `threshold`: per token, or summed over them.
    per_row = jnp.sum(magnitude >= threshold[..., None], axis=-1)
    return jnp.sum(per_row) if per_tensor else per_row

  def halve(_, bounds):  # Invariant: at least `keep` entries have |x| >= low.
    low, high = bounds
    middle = (low + high) / 2
    enough = kept(middle) >= keep
    return jnp.where(enough, middle, low), jnp.where(enough, high, middle)

  high = jnp.max(magnitude) if per_tensor else jnp.max(magnitude, axis=-1)
  low, _ = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (jnp.zeros_like(high), high))
  return jnp.where(magnitude >= low[..., None], x, jnp.zeros_like(x))


class Embed(nn.Module):
  """An embedding table whose values pass through `quantizer` (e.g. int8 fake quantization)."""
  num_embeddings: int
  features: int
  quantizer: Optional[Callable[[jax.Array], jax.Array]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    table = self.param('embedding', nn.initializers.normal(INIT_STDDEV),
                       (self.num_embeddings, self.features))
    if self.quantizer is not None:
      table = self.quantizer(table)
    return jnp.take(table, ids, axis=0).astype(self.dtype)


class Projection(nn.Module):
  """Dense (optionally quantized, optionally with pruned inputs) or, if not linear, identity."""
  features: int
  linear: bool = True
  dot_general_cls: Optional[Callable[[], Any]] = None
  activation_sparsity: float = 0.0
  activation_prune_scope: str = 'token'
  dense_cls: Callable[..., nn.Module] = nn.Dense
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, gate=None):
    """With `gate` (a traced 0/1), the Dense's output where it is 1 and `x` where it is 0."""
    if not self.linear:
      return x
    y = x
    if self.activation_sparsity > 0:
      y = prune_activations(y, self.activation_sparsity, self.activation_prune_scope)
    y = self.dense_cls(self.features, dot_general_cls=self.dot_general_cls,
                       kernel_init=nn.initializers.normal(INIT_STDDEV), dtype=self.dtype,
                       name='dense')(y)
    return y if gate is None else jnp.where(gate > 0, y, x)


class EncoderLayer(nn.Module):
  """One post-LN Transformer block. With `first_token_only` (the last block), every token is a
  key and value but only the first ([CLS], all the classifier reads) is a query, and only its
  output is computed, with the first-token slices of the whole block's dropout masks: the same
  function of the weights as the whole block's first token, in training too, for the keys'
  and values' share of the block's work (10-15% at the bench's shapes)."""
  arch: Architecture
  index: int
  dropout_rate: float
  attention_dropout_rate: float
  dense: Callable[..., Projection]
  dtype: Any = jnp.float32
  first_token_only: bool = False

  @nn.compact
  def __call__(self, x, attention_bias, seed: Optional[jax.Array], gates=None):
    arch, (batch, length, _) = self.arch, x.shape
    heads, head_dim = arch.num_heads, arch.hidden_size // arch.num_heads
    name = lambda p: f'layer_{self.index}/{p}'
    gate = lambda p: None if gates is None else gates.get(name(p))
    # Heads-major [B, H, L, D] operands: XLA on CPU runs both attention matmuls and the softmax
    # between them 1.3-1.7x as fast this way as with [B, L, H, D] ones (BENCHMARKS.md).
    split_heads = lambda y: y.reshape(batch, y.shape[1], heads, head_dim).transpose(0, 2, 1, 3)
    k, v = (split_heads(self.dense(arch.hidden_size, arch.is_linear(name(p)), name=p)(
        x, gate(p))) for p in ('key', 'value'))
    if self.first_token_only:
      x = x[:, :1]
    q = split_heads(self.dense(arch.hidden_size, arch.is_linear(name('query')), name='query')(
        x, gate('query')))
    # Scaling q rather than the scores: XLA on CPU fuses a scaled [B, H, L, L] dot worse.
    scores = jnp.einsum('bhqd,bhkd->bhqk', q * jnp.asarray(head_dim ** -0.5, x.dtype), k)
    probs = jax.nn.softmax(scores.astype(jnp.float32) + attention_bias, axis=-1)
    probs = Dropout(self.attention_dropout_rate)(probs.astype(x.dtype), seed,
                                                 (batch, heads, length, length))
    context = jnp.einsum('bhqk,bhkd->bhqd', probs, v).transpose(0, 2, 1, 3).reshape(x.shape)
    attention = self.dense(arch.hidden_size, arch.is_linear(name('attention_output')),
                           name='attention_output')(context, gate('attention_output'))
    attention = Dropout(self.dropout_rate)(attention, seed, (batch, length, arch.hidden_size))
    x = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype, name='attention_norm')(x + attention)
    hidden = nn.gelu(self.dense(arch.intermediate_size, arch.is_linear(name('intermediate')),
                                name='intermediate')(x, gate('intermediate')),
                     approximate=False)
    output = self.dense(arch.hidden_size, arch.is_linear(name('output')), name='output')(
        hidden, gate('output'))
    output = Dropout(self.dropout_rate)(output, seed, (batch, length, arch.hidden_size))
    return nn.LayerNorm(epsilon=1e-12, dtype=self.dtype, name='output_norm')(x + output)


class BertClassifier(nn.Module):
  """Token ids [B, L] (PAD_ID marks padding) -> class logits [B, num_classes]."""
  arch: Architecture
  vocab_size: int
  max_length: int
  num_classes: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  dot_general_cls: Optional[Callable[[], Any]] = None
  embedding_quantizer: Optional[Callable[[jax.Array], jax.Array]] = None
  activation_sparsity: float = 0.0
  activation_prune_scope: str = 'token'  # One threshold per 'token' or per 'tensor'.
  dense_cls: Callable[..., nn.Module] = nn.Dense  # Of every Dense (nn.Dense's signature).
  dtype: Any = 'float32'  # Computation dtype: 'float32' or 'bfloat16' (mixed precision).

  @nn.compact
  def __call__(self, input_ids, deterministic: bool = True, gates: Optional[dict] = None):
    """`gates`, {square Dense name: 0/1} (traced), turns Dense layers of the architecture into
    the identity, as data: one program serves every identity pattern (one-shot scoring)."""
    arch, dtype = self.arch, jnp.dtype(self.dtype)
    dense = lambda features, linear=True, name=None: Projection(
        features, linear, self.dot_general_cls, self.activation_sparsity,
        self.activation_prune_scope, self.dense_cls, dtype, name=name)
    # Per-tensor thresholds see every token of the last block, as the lab's full block did.
    cls_only_last_block = not (self.activation_sparsity
                               and self.activation_prune_scope == 'tensor')
    embed = lambda num, name: Embed(num, arch.hidden_size, self.embedding_quantizer, dtype,
                                    name=name)
    positions = jnp.arange(input_ids.shape[1])[None, :]
    x = (embed(self.vocab_size, 'token_embeddings')(input_ids)
         + embed(self.max_length, 'position_embeddings')(positions)
         + embed(2, 'segment_embeddings')(jnp.zeros_like(input_ids)))
    x = nn.LayerNorm(epsilon=1e-12, dtype=dtype, name='embeddings_norm')(x)
    seed = dropout_seed(self, deterministic)
    x = Dropout(self.dropout_rate)(x, seed)
    is_pad = input_ids == PAD_ID
    attention_bias = jnp.where(is_pad, jnp.finfo(jnp.float32).min, 0.0)[:, None, None, :]
    for i in range(arch.num_layers):
      x = EncoderLayer(arch, i, self.dropout_rate, self.attention_dropout_rate, dense, dtype,
                       first_token_only=cls_only_last_block and i == arch.num_layers - 1,
                       name=f'layer_{i}')(x, attention_bias, seed, gates)
    pooled = jnp.tanh(dense(arch.hidden_size, arch.is_linear('pooler'), name='pooler')(
        x[:, 0], None if gates is None else gates.get('pooler')))
    pooled = Dropout(self.dropout_rate)(pooled, seed)
    return dense(self.num_classes, name='classifier')(pooled).astype(jnp.float32)


def init_params(model: nn.Module, rng: jax.Array):
  """The parameters `model.init` would give in distribution, drawn on the host with NumPy:
  N(0, INIT_STDDEV) kernels and embeddings, zero biases, unit LayerNorm scales.

  JAX's initializers compile a program per parameter shape, eagerly, or per model under jit:
  2 to 4 seconds for each new architecture on a 2-core CPU, while NumPy draws a small model in
  milliseconds. Shapes come from tracing `model.init` (`jax.eval_shape`, nothing compiled).
  Each parameter draws from its own stream, keyed by `rng` and its path, so it does not depend
  on which other layers the architecture has.
  """
  shapes = jax.eval_shape(model.init, rng, jnp.zeros((1, 1), jnp.int32))['params']
  seed = np.asarray(jax.random.key_data(rng)).ravel().tolist()

  def draw(path, leaf):
    name = path[-1].key
    if name in ('kernel', 'embedding'):
      stream = zlib.crc32(jax.tree_util.keystr(path).encode())
      normal = np.random.default_rng([*seed, stream]).standard_normal(leaf.shape, np.float32)
      return normal * np.float32(INIT_STDDEV)
    if name in ('bias', 'scale'):
      return np.full(leaf.shape, 1.0 if name == 'scale' else 0.0, leaf.dtype)
    raise ValueError(f'no host initializer for parameter {jax.tree_util.keystr(path)}')

  return jax.tree_util.tree_map_with_path(draw, shapes)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
