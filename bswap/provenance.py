"""What a run was started with: the command, the resolved config and the versions.

`record_start(run_dir, config, step)` keeps, in a training's run directory,

  config.json   the resolved config of the run's first start (never rewritten: a
                resumed or evaluated run keeps the record of how it began)
  starts.jsonl  one line per start: the exact command, working directory, host,
                pid, time, the step it started from, the versions (python, bswap,
                jax, flax, optax) and the config fields that differ from config.json

Only process 0 writes.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import socket
import sys
from typing import Any

from bswap import files

CONFIG = 'config.json'
STARTS = 'starts.jsonl'


def versions() -> dict[str, str]:
  import importlib.metadata

  import flax
  import jax
  import optax

  try:
    bswap_version = importlib.metadata.version('bswap')
  except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
    bswap_version = 'unknown'
  return {
    'python': platform.python_version(),
    'bswap': bswap_version,
    'jax': jax.__version__,
    'flax': flax.__version__,
    'optax': optax.__version__,
  }


def config_dict(config) -> dict[str, Any]:
  """The resolved config as JSON-ready data."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _flat(tree: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def differences(first: dict, now: dict) -> dict[str, list]:
  """{'train.epochs': [first, now], ...} for every field that differs."""
  a, b = _flat(first), _flat(now)
  return {k: [a.get(k), b.get(k)] for k in sorted({*a, *b}) if a.get(k) != b.get(k)}


def record_start(run_dir: str, config, step: int, process_index: int = 0) -> None:
  if process_index != 0:
    return
  now = config_dict(config)
  config_path, starts_path = os.path.join(run_dir, CONFIG), os.path.join(run_dir, STARTS)
  if files.exists(config_path):
    first = json.loads(files.read_text(config_path))
  else:
    first = now
    files.write(config_path, json.dumps(now, indent=2, sort_keys=True) + '\n')
  start = {
    'command': shlex.join([sys.executable, *sys.argv]),
    'cwd': os.getcwd(),
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'time': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    'step': step,
    'versions': versions(),
    'config_changes': differences(first, now),
  }
  old = files.read_text(starts_path) if files.exists(starts_path) else ''
  files.write(starts_path, old + json.dumps(start) + '\n')
