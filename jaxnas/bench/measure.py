"""Timing, and what a compiled program does: its dots, its FLOPs, the machine's GEMM roof."""

import collections
import re
import resource
import time

import jax
import jax.numpy as jnp

from jaxnas.models import Architecture


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
  """The best float32 GEMM rate XLA reaches here: the roof for achieved GFLOP/s."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = min(timed(lambda: matmul(a).block_until_ready())[1] for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def dot_operand_types(hlo_text: str) -> dict:
  """How many dots of a compiled program (its optimized HLO text) take each pair of operand
  types. With `--dtype=bfloat16` this says which dots XLA kept in bfloat16 and which it runs
  in float32 with converted operands, as it does for all of them on a CPU without
  AVX512_BF16."""
  counts = collections.Counter()
  for computation in re.split(r'\n(?=\S)', hlo_text):
    types = dict(re.findall(r'%([\w.-]+) = (\w+)\[', computation))
    for lhs, rhs in re.findall(r' dot\(%([\w.-]+), %([\w.-]+)\)', computation):
      counts[f'{types.get(lhs)} x {types.get(rhs)}'] += 1
  return dict(sorted(counts.items()))


def train_flops_per_example(arch: Architecture, length: int) -> float:
  """Model FLOPs of one training example (forward + backward = 3x forward), matmuls only. The
  last block computes keys and values for every token and the rest for [CLS] only."""
  d, f = arch.hidden_size, arch.intermediate_size
  per_token = 2 * (4 * d * d + 2 * d * f) + 2 * 2 * length * d  # Projections, FFN, QK^T, PV.
  last_block = 2 * 2 * d * d * length + per_token
  return 3 * ((arch.num_layers - 1) * per_token * length + last_block)
