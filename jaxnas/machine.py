"""The machine a run is on: its CPU's instruction-set features decide how int8 dots run
(`quantization.int8_dot_path`), and timings from different machines are not comparable (the
bench names the machine on every line)."""

import functools
import os
import platform

import jax

CPU_FEATURES = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'avx_vnni', 'amx_tile',
                'amx_bf16', 'amx_int8')  # What XLA's and oneDNN's CPU kernels can use.


@functools.cache
def _cpuinfo() -> tuple[str, frozenset]:
  """The first CPU's model name and flags in /proc/cpuinfo; off Linux, no flags."""
  model, flags = '', frozenset()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and not model:
          model = value.strip()
        elif key.strip() == 'flags' and not flags:
          flags = frozenset(value.split())
  except OSError:
    pass
  return model or platform.processor() or platform.machine(), flags


def cpu_features() -> frozenset:
  """Which of CPU_FEATURES this machine's CPU has."""
  return _cpuinfo()[1] & frozenset(CPU_FEATURES)


def describe() -> dict:
  """The CPU (model, cores, features) and the JAX build."""
  return {'cpu': _cpuinfo()[0], 'cores': os.cpu_count(),
          'cpu_features': [name for name in CPU_FEATURES if name in cpu_features()],
          'jax': jax.__version__, 'backend': jax.default_backend()}
