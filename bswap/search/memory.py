"""Give memory the process has freed back to the OS (glibc's malloc).

Without this a search held on to what it had freed. Every XLA compile or
persistent-cache load churns tens of MB through malloc on many threads and
leaves it free but fragmented (~10 MB per executable on top of the live one);
and once glibc's adaptive mmap threshold has grown, the candidates' residual
buffers (16 MB activations at batch 128) are carved from the heap, where they
fragment it further: a search's peak was about twice what it used. Trimming
after compiles, and optionally mapping large buffers on their own (`low`:
config.search.low_memory), bring the peak down (numbers in docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import functools

from jax import monitoring

COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'  # compiles and cache loads
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, <malloc.h>
MMAP_THRESHOLD = 1 << 20  # bytes


def _libc():
  """glibc's malloc_trim and mallopt, or None where libc is not glibc (macOS, musl)."""
  try:
    libc = ctypes.CDLL(None)
    trim, mallopt = libc.malloc_trim, libc.mallopt
  except (OSError, AttributeError):
    return None
  trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  return trim, mallopt


@functools.cache
def trim_after_compiles() -> bool:
  """`malloc_trim(0)` after each compile or cache load (a jax.monitoring event).

  Once per process; False where libc is not glibc. A search pays for it only
  while it compiles (or loads) its blocks' executables: about 9% of a warm
  20-candidate WRN-40-2 search, nothing after.
  """
  libc = _libc()
  if libc is None:
    return False
  trim, _ = libc

  def on_duration(event: str, duration: float, **_):
    del duration
    if event == COMPILE_EVENT:
      trim(0)

  monitoring.register_event_duration_secs_listener(on_duration)
  return True


@functools.cache
def map_large_buffers() -> bool:
  """Fix glibc's mmap threshold at 1 MiB: large buffers are mapped, and unmapped when freed.

  This also stops the threshold's adaptive growth, so activations and
  residuals never settle in (and fragment) the heap. The price is a page fault
  per 4 KiB of every large buffer: a search runs slower (docs/benchmarks.md).
  """
  libc = _libc()
  if libc is None:
    return False
  _, mallopt = libc
  return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def return_freed_memory(low: bool = False) -> bool:
  """Trim after compiles; with `low`, also map large buffers. False where libc is not glibc."""
  trimmed = trim_after_compiles()
  return trimmed and (map_large_buffers() if low else True)
