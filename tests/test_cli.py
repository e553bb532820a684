"""lightcls.cli: the malloc setting every command makes before JAX starts (its effect on a real XLA program,
measured in fresh processes against glibc's default)."""
import functools
import json
import platform
import subprocess
import sys

import pytest

from lightcls import cli
from tests import helpers

# A jitted program whose scratch buffer (the cumulative sum, 32 MB) is above glibc's largest mmap threshold;
# prints the page faults of each of 100 executions after five.
_FAULTS_PER_EXECUTION = '''
import json, resource, sys
from lightcls import cli
kept = sys.argv[1] == 'kept' and cli.keep_freed_host_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.cumsum(x, axis=0)[::-1] * x).sum())
x = jnp.ones((1024, 8192))
for _ in range(5):
  f(x).block_until_ready()
faults = []
for _ in range(100):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'kept': kept, 'faults': faults}))
'''


@functools.cache
def _probe(script: str, mode: str) -> dict:
  """The JSON that `script` prints last, run in a fresh process with `mode` ('kept' or 'default')."""
  result = subprocess.run([sys.executable, '-c', script, mode], cwd=helpers.REPO,
                          capture_output=True, text=True, check=True)
  return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_kept_freed_memory_spares_xla_the_page_faults_of_a_fresh_scratch_buffer_every_execution():
  pages = 1024 * 8192 * 4 // 4096
  default, kept = _probe(_FAULTS_PER_EXECUTION, 'default'), _probe(_FAULTS_PER_EXECUTION, 'kept')
  assert not default['kept'] and kept['kept']
  # glibc's default maps the buffer anew for each execution and faults in every page of it ...
  assert sorted(default['faults'])[10] >= pages
  # ... kept, the pages are reused: most executions touch no new page.
  assert sorted(kept['faults'])[50] < pages // 100


# Times one call of a jitted program of about a second: how long the call took to return, and how long until its
# result was ready.
_DISPATCH_TIMES = '''
import json, sys, time
from lightcls import cli
kept = sys.argv[1] == 'kept' and cli.keep_freed_host_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.linalg.matrix_power(x, 32).sum())
x = jnp.full((1024, 1024), 1 / 1024, jnp.float32)
f(x).block_until_ready()
start = time.perf_counter()
y = f(x)
returned = time.perf_counter() - start
y.block_until_ready()
print(json.dumps({'kept': kept, 'returned': returned, 'ready': time.perf_counter() - start}))
'''


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_kept_freed_memory_runs_cpu_computations_in_order():
  # Dispatched asynchronously, a worker thread allocated each execution's scratch buffer, and the next one
  # could allocate its own before that thread had freed the last: the heap grew by a buffer. In order, the
  # calling thread allocates it, and a call returns only when its computation is done. (Counting heap growths
  # per 100 executions told the two apart only most of the time: 0-5 asynchronously, 0-3 in order on a loaded
  # 2-core machine; experiments/RESULTS.md, "CPU speed".)
  default, kept = _probe(_DISPATCH_TIMES, 'default'), _probe(_DISPATCH_TIMES, 'kept')
  assert not default['kept'] and kept['kept']
  assert default['returned'] < 0.5 * default['ready']
  assert kept['returned'] > 0.9 * kept['ready']


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
  monkeypatch.setenv('LD_PRELOAD', '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4')
  assert cli.keep_freed_host_memory() is False
