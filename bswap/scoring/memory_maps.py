"""The process's memory maps: how many it uses, how many Linux allows it, a budget.

XLA:CPU maps every compiled executable's code and data as many small regions
(tens for one piece of the proxy engine, over a thousand for a whole-network
pass; docs/benchmarks.md, "Memory maps"), and Linux gives a process at most
vm.max_map_count of them. Past that LLVM cannot place new code ("LLVM
compilation error: Cannot allocate memory") and the process dies: scoring
WRN-40-2 candidates by every metric reached it within 25 candidates. Whoever holds many
executables (the search's `Pieces`) keeps the process under a share of the limit.
"""

from __future__ import annotations

# Of vm.max_map_count: the rest is for the interpreter, libraries, jax's own
# caches and the executables in use that the holder does not own.
SHARE = 0.7
_MAPS = '/proc/self/maps'
_LIMIT = '/proc/sys/vm/max_map_count'


def in_use() -> int | None:
  """Memory maps of this process now; None where /proc is missing (not Linux)."""
  try:
    with open(_MAPS, 'rb') as f:
      return sum(1 for _ in f)
  except OSError:
    return None


def limit() -> int | None:
  """vm.max_map_count; None where it cannot be read."""
  try:
    with open(_LIMIT) as f:
      return int(f.read())
  except (OSError, ValueError):
    return None


def budget(share: float = SHARE) -> int | None:
  """How many maps a holder of executables keeps the process under; None: no limit known."""
  most = limit()
  return None if most is None else int(share * most)
