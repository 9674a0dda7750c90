"""--config.stage=eval: a trained network's test metrics, on their own.

  python -m bswap.main --config=configs/cifar_400k.py --config.stage=eval \
    --workdir=workdir/cifar_400k/student

The workdir names what to evaluate (bswap.load.locate): a run directory, the
workdir above it (its student, else its teacher), the run's checkpoints/, or
one step's checkpoints/<step>/. The config gives the data (config.data), the
evaluation batch (config.train.eval_batch_size) and the compute dtype and
convolutions (config.train.dtype, .conv_impl), as in training, so evaluating
a run with its own config reproduces the test error its training logged.

Writes <run dir>/eval.json: test loss, error and top-5 error (%, every test
example once), parameters and multiply-accumulates per image at
config.data.image_size, and images/s of the evaluation (after compiling;
the data feed included).
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
from absl import logging

from bswap import data as data_lib
from bswap import files
from bswap import load
from bswap import parallel
from bswap.nets import accounting
from bswap.train import loop
from bswap.train import metrics as metric_writers
from bswap.train import steps

FILE = 'eval.json'


def evaluate(config, workdir: str) -> dict:
  """Evaluates the run `workdir` names on config.data's test split; writes and returns eval.json."""
  where = load.locate(workdir)
  tc = config.train
  if tc.dtype not in steps.DTYPES:
    raise ValueError(f'config.train.dtype {tc.dtype!r} is not one of {", ".join(steps.DTYPES)}')
  mesh = parallel.make_mesh()
  parallel.check_divisible(tc.eval_batch_size, mesh, 'eval batch size')
  data = data_lib.open_data(config)
  variables = load.read_variables(where, mesh)
  classes = load.num_classes(variables)
  model = load.build(where, variables, loop.conv_impl(config, mesh))
  if data.num_classes != classes:
    raise ValueError(
      f'{where.run_dir} was trained on {classes} classes but {config.data.source} has '
      f'{data.num_classes}; evaluate it on its own data (--config.data.source)'
    )
  sums, seconds = _test_sums(config, data, mesh, model, variables)
  count = int(sums['count'])
  image_size = config.data.image_size
  cost = accounting.count(where.genotype, image_size, classes)
  result = {
    'run_dir': where.run_dir,
    'step': where.step,
    'genotype': ' '.join(where.genotype.paper_names),
    'data': config.data.source,
    'examples': count,
    'test_loss': float(sums['loss']) / count,
    'test_error': 100.0 * int(sums['wrong']) / count,
    **({'test_top5_error': 100.0 * int(sums['wrong5']) / count} if classes > 5 else {}),
    'params': cost.params,
    'macs': cost.macs,
    'image_size': image_size,
    'images_per_sec': count / seconds,
    'logged_test_error': _logged_test_error(where),
    'dtype': tc.dtype,
    'devices': f'{mesh.devices.size} x {mesh.devices.flat[0].device_kind}',
    'jax': jax.__version__,
  }
  if jax.process_index() == 0:
    files.write(os.path.join(where.run_dir, FILE), json.dumps(result, indent=2) + '\n')
  _log(result)
  return result


def _test_sums(config, data, mesh, model, variables):
  """Sums of loss, top-1 and top-5 errors and examples over the test split, and the seconds."""
  feed = data.eval_feed(mesh, config.train.eval_batch_size)
  setup = steps.Setup(
    model=model,
    tx=None,
    mesh=mesh,
    batch_size=config.train.eval_batch_size,
    eval_batch_size=config.train.eval_batch_size,
    steps_per_epoch=1,
    train_transform=None,
    eval_transform=data.eval_transform,
    take_train=None,
    take_eval=feed.take,
    eval_batches_per_call=feed.batches_per_call,
    dtype=steps.DTYPES[config.train.dtype],
  )
  state = steps.TrainState(
    step=parallel.put_replicated(jax.numpy.int32(0), mesh),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=None,
  )
  sums = parallel.put_replicated(steps.zero_sums(), mesh)
  call = jax.jit(
    functools.partial(steps.eval_call, setup=setup), out_shardings=parallel.replicated(mesh)
  )
  call = call.lower(sums, state, feed.inputs_spec()).compile()
  start = time.perf_counter()
  sums = loop.evaluation_sums(call, sums, state, feed, config.train.eval_batch_size, config)
  return sums, time.perf_counter() - start


def _logged_test_error(where: load.Located) -> float | None:
  """The test error the training logged at the evaluated step, if it logged one."""
  path = os.path.join(where.run_dir, metric_writers.METRICS)
  if not files.exists(path):
    return None
  records = [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]
  logged = [r['test_error'] for r in records if r.get('step') == where.step and 'test_error' in r]
  return logged[-1] if logged else None


def _log(result: dict) -> None:
  top5 = f', top-5 {result["test_top5_error"]:.2f}%' if 'test_top5_error' in result else ''
  logging.info(
    'Evaluated %s step %d on %s (%s test images): error %.2f%%%s, loss %.4f | %s params, '
    '%s MACs at %d px | %s images/s | %s',
    result['run_dir'],
    result['step'],
    result['data'],
    f'{result["examples"]:,}',
    result['test_error'],
    top5,
    result['test_loss'],
    f'{result["params"]:,}',
    f'{result["macs"]:,}',
    result['image_size'],
    f'{result["images_per_sec"]:,.0f}',
    os.path.join(result['run_dir'], FILE),
  )
