"""Entry point: `python -m bswap.main --config=configs/cifar_400k.py [--workdir=DIR]`.

Parses flags, logs the devices, and hands (config, workdir) to the stage the
config names. No logic of its own. Libraries' chatter is hidden (bswap.logs)
and the resolved config is logged only at debug verbosity (`-v=1`).
"""

from __future__ import annotations

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bswap import files
from bswap import logs
from bswap import parallel
from bswap import pipeline
from bswap.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/cifar_400k.py[:smoke].')
flags.DEFINE_string('workdir', None, 'Output directory (default: workdir/<config name>).')
flags.mark_flags_as_required(['config'])


def default_workdir(config_arg: str) -> str:
  """workdir/cifar_400k for configs/cifar_400k.py, workdir/cifar_400k_smoke for :smoke."""
  path, _, variant = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('workdir', f'{name}_{variant}' if variant else name)


def config_error(e: Exception, argv: list[str]) -> str:
  """One line for a config that cannot be loaded: the file, or the override, and the fix."""
  raw = str(e.args[0] if e.args else e).replace("\\'", "'").replace('\\n', '\n')
  lines = [line.strip().strip('\'"') for line in raw.splitlines() if line.strip()]
  text = ' '.join(lines)
  config_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
  if 'No such file or directory' in text or 'Failed loading config file' in text:
    return (
      f'--config={config_arg}: no such config file; give one of configs/*.py, e.g. '
      '--config=configs/cifar_400k.py or configs/cifar_400k.py:smoke'
    )
  if isinstance(e, (AttributeError, KeyError)):
    key = lines[0] if lines else ''
    flag = next((a.split('=')[0] for a in argv if a.split('=')[0].endswith(f'.{key}')), key)
    hint = ' '.join(lines[1:])
    return f'{flag}: no such field in {config_arg}' + (f'; {hint}' if hint else '')
  return f'--config={config_arg}: {text}'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logs.quiet_noise()  # before JAX looks for its backends
  try:
    config = FLAGS.config  # loads the file and applies the --config.x=y overrides
    config.get('stage')  # a file that failed to load fails on first use
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    sys.exit(f'error: {config_error(e, sys.argv)}')
  workdir = FLAGS.workdir or default_workdir(flags.FLAGS['config'].config_filename)
  parallel.initialize(config.get('distributed', False))  # before any other JAX call
  logging.info(
    'Process %d of %d; %d local devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.local_devices()[0].device_kind,
  )
  logging.info('Stage %r, workdir %s', config.stage, workdir)
  logging.debug('Config:\n%s', config)
  try:
    pipeline.run(config, workdir)
  except loop.Stopped as e:  # SIGTERM or a preemption: the state is saved
    logging.warning('%s', e)
    sys.exit(loop.EXIT_STOPPED)
  except (ValueError, OSError) as e:
    # bswap's own errors say what to do; a traceback would bury that.
    message = files.describe_error(e)
    logging.error('%s', message)
    sys.exit(f'error: {message}')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config that cannot be loaded as one line, not a traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    sys.exit(f'error: {config_error(e, argv)}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
