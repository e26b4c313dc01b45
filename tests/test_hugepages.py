"""The entry points' restart with huge pages, and that it cuts XLA's page faults."""

import os
import subprocess
import sys

import pytest

from jaxnas import hugepages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Restarts with huge pages, then prints its GLIBC_TUNABLES and the page faults of a jitted
# program with a fresh 256 MB output per call (the allocation pattern of XLA's step buffers).
FAULTS_PER_CALL = '''
from jaxnas import hugepages
hugepages.restart_with_huge_pages()
import os, resource, jax, jax.numpy as jnp
double = jax.jit(lambda x: 2.0 * x)
x = jnp.ones((64, 1 << 20))
double(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  double(x).block_until_ready()
print(os.environ.get('GLIBC_TUNABLES', ''))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
'''


def test_tunables_with_huge_pages():
  assert hugepages.tunables_with_huge_pages('') == 'glibc.malloc.hugetlb=1'
  assert (hugepages.tunables_with_huge_pages('glibc.malloc.arena_max=2')
          == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
  # A user's own setting, e.g. turning them off, is kept.
  assert hugepages.tunables_with_huge_pages('glibc.malloc.hugetlb=0') is None
  assert hugepages.tunables_with_huge_pages('a.b=1:glibc.malloc.hugetlb=2') is None


def _faults_per_call(tunables=None):
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  if tunables is not None:
    env['GLIBC_TUNABLES'] = tunables
  out = subprocess.run([sys.executable, '-c', FAULTS_PER_CALL], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True).stdout.splitlines()
  return out[-2], float(out[-1])


@pytest.mark.skipif(not hugepages.supported(), reason='needs glibc >= 2.35 and THP on madvise')
def test_restart_sets_huge_pages_and_cuts_page_faults():
  tunables, faults = _faults_per_call()
  assert tunables == 'glibc.malloc.hugetlb=1'
  off_tunables, faults_off = _faults_per_call('glibc.malloc.hugetlb=0')
  assert off_tunables == 'glibc.malloc.hugetlb=0'  # The opt-out is kept, without a restart.
  # 256 MB in 4 KiB pages is 65,536 faults a call; in 2 MiB pages, 128.
  assert faults_off > 30_000
  assert faults < faults_off / 10
