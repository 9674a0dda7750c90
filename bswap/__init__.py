"""BlockSwap in JAX/Flax. `bswap.load_student(run_dir) -> (model, variables)` and
`bswap.normalize(images)` (bswap/load.py) are imported on first use, so that
`import bswap` stays cheap for the command-line tools."""

_LAZY = {'load_student': 'bswap.load', 'normalize': 'bswap.load'}


def __getattr__(name: str):
  if name in _LAZY:
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module bswap has no attribute {name!r}')
