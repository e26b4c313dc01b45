"""Transparent huge pages for the buffers XLA allocates on every step of a CPU run.

XLA's CPU runtime mallocs each execution's temporary buffer (212 MB for the small benchmark
train step) and frees it when the step ends. glibc serves a request that large with a fresh
mmap, so every step touches new memory page by page: 57,000 page faults and 0.16 s of kernel
time in a 0.38 s step on the project's 2-core CPU. With the tunable `glibc.malloc.hugetlb=1`
(glibc >= 2.35), glibc asks the kernel for transparent huge pages on its mappings, which cuts
the faults about 100-fold (BENCHMARKS.md). glibc reads tunables only when a process starts, so
the entry points (launch.py, `python -m jaxnas.bench`) re-execute themselves once with it set,
before their heavy imports. A GLIBC_TUNABLES that already sets `glibc.malloc.hugetlb`, e.g. to
0, is left as it is.
"""

import os
import platform
import sys
from typing import Optional

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def tunables_with_huge_pages(tunables: str) -> Optional[str]:
  """`tunables` (GLIBC_TUNABLES's value) plus hugetlb=1; None if it already sets hugetlb."""
  entries = [entry for entry in tunables.split(':') if entry]
  if any(entry.split('=', 1)[0] == TUNABLE for entry in entries):
    return None
  return ':'.join(entries + [f'{TUNABLE}=1'])


def supported() -> bool:
  """glibc >= 2.35 and a kernel that gives huge pages to the mappings that ask for them."""
  libc, version = platform.libc_ver()
  if libc != 'glibc' or tuple(int(part) for part in version.split('.')[:2]) < (2, 35):
    return False
  try:
    with open(THP_MODE_FILE) as f:
      return '[madvise]' in f.read()  # With [always] every mapping gets them already.
  except OSError:
    return False


def restart_with_huge_pages():
  """Re-executes this process (same pid and command line) with huge pages, when supported
  and not yet set; otherwise returns."""
  if not supported() or not sys.executable:
    return
  tunables = tunables_with_huge_pages(os.environ.get('GLIBC_TUNABLES', ''))
  if tunables is None:
    return
  os.environ['GLIBC_TUNABLES'] = tunables
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)
