"""Test setup: runs before any test module imports JAX work.

Four fake CPU devices let multi-device code be tested on one CPU; the option
must be set before the first JAX operation, so it lives here. On a host whose
default backend is an accelerator (one GPU, say) `jax.devices()` lists that
instead, so a test that needs a device count says so with
`@pytest.mark.devices(4)` and is skipped, not failed, elsewhere; a test of
what a backend chooses says `@pytest.mark.platform('cpu')`.

Every test also checks that it leaves no process-wide state behind (JAX
options, jax.monitoring listeners, environment variables, the working
directory, absl's parsed flags): such state makes results depend on the
order the tests run in. And none may write the default data cache: it points
at a temporary folder here (BSWAP_CACHE_DIR), which must stay empty.
"""

import contextlib
import logging as pylogging
import os
import shutil
import tempfile

import jax
import pytest
from absl import flags

jax.config.update('jax_num_cpu_devices', 4)

# bswap imports these lazily, and they set environment variables when first
# imported (tensorboardX: CRC32C_SW_MODE): imported here, no test appears to.
with contextlib.suppress(ImportError):
  import tensorboardX  # noqa: F401

# The decoded-data cache a source falls back on (bswap/data/sources.py) when a
# test passes no cache_dir: here rather than the user's ~/.cache/bswap, and
# each test must leave it empty (the guard below).
EXHAUSTIVE = 'BSWAP_EXHAUSTIVE_TESTS'
DATA_CACHE = tempfile.mkdtemp(prefix='bswap-tests-cache-')
os.environ['BSWAP_CACHE_DIR'] = DATA_CACHE

# JAX options a test (or the code it runs) might change and forget to restore.
_JAX_OPTIONS = (
  'jax_enable_x64',
  'jax_compilation_cache_dir',
  'jax_persistent_cache_min_compile_time_secs',
  'jax_default_matmul_precision',
  'jax_debug_nans',
  'jax_disable_jit',
)
# Process-wide by design: the search trims malloc after compiles from its first
# run on (bswap/search/memory.py), once per process.
_KEPT_LISTENERS = ('trim_after_compiles.<locals>.on_duration',)


def pytest_configure(config):
  config.addinivalue_line(
    'markers', 'devices(n): needs exactly n JAX devices; skipped on hosts with another count'
  )
  config.addinivalue_line(
    'markers', "platform(name): needs JAX's default backend to be `name`; skipped elsewhere"
  )
  config.addinivalue_line(
    'markers',
    'slow: takes more than a few seconds; the fast development run (-m "not slow") skips it',
  )
  config.addinivalue_line(
    'markers',
    f'exhaustive: a minutes-long equivalence sweep; skipped unless {EXHAUSTIVE}=1',
  )


def pytest_collection_modifyitems(config, items):
  # The long sweeps (more genotypes, ResNet-34, float32 against float64) would take CI
  # past its time limit; each has a cheaper sibling that CI runs.
  if os.environ.get(EXHAUSTIVE) == '1':
    return
  skip = pytest.mark.skip(reason=f'an exhaustive sweep: set {EXHAUSTIVE}=1 to run it')
  for item in items:
    if 'exhaustive' in item.keywords:
      item.add_marker(skip)


def pytest_unconfigure(config):
  shutil.rmtree(DATA_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
  for mark in item.iter_markers('devices'):
    (wanted,) = mark.args
    if jax.device_count() != wanted:
      pytest.skip(f'needs {wanted} devices; this host has {jax.device_count()}')
  for mark in item.iter_markers('platform'):
    (wanted,) = mark.args
    if jax.default_backend() != wanted:
      pytest.skip(f'needs the {wanted} backend; this host runs {jax.default_backend()}')


def _listeners():
  """The jax.monitoring listeners now registered, by kind (private lists; {} if they move)."""
  from jax._src import monitoring

  kinds = ('_event_listeners', '_event_duration_secs_listeners', '_scalar_listeners')
  return {
    kind: [f for f in getattr(monitoring, kind, []) if f.__qualname__ not in _KEPT_LISTENERS]
    for kind in kinds
  }


def _global_state() -> dict:
  environ = {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}  # pytest's own
  return {
    'jax options': {name: getattr(jax.config, name) for name in _JAX_OPTIONS},
    'jax.monitoring listeners': _listeners(),
    'environment variables': environ,
    'working directory': os.getcwd(),
    'absl flags parsed': flags.FLAGS.is_parsed(),
    'files in the default data cache': sorted(os.listdir(DATA_CACHE)),
  }


def _difference(before, after) -> str:
  """What changed, naming only the changed keys of a dict."""
  if isinstance(before, dict) and isinstance(after, dict):
    keys = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    return ', '.join(f'{k}: {before.get(k)!r} -> {after.get(k)!r}' for k in keys)
  return f'{before!r} -> {after!r}'


@pytest.fixture(autouse=True)
def _no_global_state_left_behind():
  before = _global_state()
  # absl's FLAGS.unparse_flags(), how a test undoes its flag parsing, also sets the
  # 'absl' logger's level to WARNING (verbosity back to -1), after which later tests'
  # caplog sees no INFO line from bswap: put the level back whatever a test did.
  absl_level = pylogging.getLogger('absl').level
  yield
  pylogging.getLogger('absl').setLevel(absl_level)
  after = _global_state()
  changed = [
    f'{name} ({_difference(before[name], after[name])})'
    for name in before
    if before[name] != after[name]
  ]
  if changed:
    pytest.fail(
      f'the test left process-wide state changed: {"; ".join(changed)}. Restore it '
      '(monkeypatch, a context manager, or a fixture that undoes it); write files under '
      'tmp_path (e.g. config.data.cache_dir)'
    )
