"""python -m bswap.export RUN --out DIR: a trained network for deployment.

Writes to DIR:

  genotype.json, checkpoints/<step>/  the parameters alone (params and batch-norm
                 statistics, no optimiser state): a run directory that
                 `bswap.load_student(DIR)` and `--config.stage=eval` read;
  model.onnx     the inference network (batch-norm in inference mode) as ONNX,
                 input 'images' float32 (N, H, W, 3), normalised as in training,
                 any N; output 'logits' (N, classes). Run it with onnxruntime;
  export.json    what was exported, the input's size, and the largest difference
                 between onnxruntime's logits and bswap's on a batch of 8.

RUN is anything `bswap.load_student` reads (a run directory, its workdir,
checkpoints/ or one step). ONNX needs the `export` extra (pip install
'bswap[export]': jax2onnx and onnxruntime); --no-onnx writes the parameters
alone. ONNX rather than a TensorFlow SavedModel: onnxruntime is a small
runtime with CPU and GPU builds, and the two packages add about 260 MB where
TensorFlow adds 1.3 GB (docs/benchmarks.md, "Export").
"""

from __future__ import annotations

import argparse
import json
import logging as pylogging
import os
import sys

import jax
import numpy as np

from bswap import files
from bswap import load
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.train import checkpoint
from bswap.train import loop

ONNX, INFO = 'model.onnx', 'export.json'
INPUT, OUTPUT = 'images', 'logits'
CHECK_BATCH = 8  # examples of the export-time comparison


def export_params(where: load.Located, variables: dict, out: str) -> str:
  """A run directory holding only the parameters: out/genotype.json and out/checkpoints/<step>/."""
  if files.exists(os.path.join(out, checkpoint.SUBDIR)):
    raise ValueError(f'{out} holds checkpoints already; choose another --out')
  files.write(os.path.join(out, loop.GENOTYPE), genotype_lib.dumps_json(where.genotype))
  ckpts = checkpoint.Checkpoints(os.path.join(out, checkpoint.SUBDIR), keep=1)
  ckpts.save(where.step, {'params': variables['params'], 'batch_stats': variables['batch_stats']})
  ckpts.close()
  return out


def _import_onnx():
  try:
    import jax2onnx
    import onnxruntime
  except ImportError as e:
    raise ValueError(
      f"ONNX export needs the 'export' extra ({e}): pip install 'bswap[export]' (or -e "
      '".[export]" in a checkout), or pass --no-onnx for the parameters alone'
    ) from e
  return jax2onnx, onnxruntime


def to_onnx(model, variables: dict, image_size: int) -> bytes:
  """The inference network as a serialised ONNX model with a symbolic batch size."""
  jax2onnx, _ = _import_onnx()
  forward = lambda images: model.apply(variables, images, train=False)[0]
  # jax2onnx imports all its plugins on first use and logs a traceback for each one
  # that does not load with this jax (dm_pix's, which bswap does not use).
  plugins = pylogging.getLogger('jax2onnx.plugins.plugin_system')
  level = plugins.level
  plugins.setLevel(pylogging.ERROR)
  try:
    proto = jax2onnx.to_onnx(
      forward,
      inputs=[('N', image_size, image_size, 3)],
      model_name='bswap_student',
      input_names=[INPUT],
      output_names=[OUTPUT],
    )
  finally:
    plugins.setLevel(level)
  # jax2onnx 0.13 annotates some intermediate values with the wrong layout (NHWC
  # for NCHW), which onnxruntime's shape inference rejects; the annotations are
  # optional, and without them onnxruntime infers every shape itself.
  del proto.graph.value_info[:]
  return proto.SerializeToString()


def run_onnx(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
  """onnxruntime's logits of a float32 (N, H, W, 3) batch, on the CPU."""
  _, ort = _import_onnx()
  options = ort.SessionOptions()
  options.log_severity_level = 3  # errors only
  session = ort.InferenceSession(model_bytes, options, providers=['CPUExecutionProvider'])
  return session.run([OUTPUT], {INPUT: np.asarray(images, np.float32)})[0]


def max_difference(model, variables: dict, model_bytes: bytes, image_size: int, seed: int = 0):
  """(largest |onnx - bswap| logit difference, largest |bswap logit|) on a random batch."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((CHECK_BATCH, image_size, image_size, 3), np.float32)
  expected = np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False)[0])(images))
  got = run_onnx(model_bytes, images)
  return float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))


def export(path: str, out: str, image_size: int | None = None, onnx: bool = True) -> dict:
  """Exports the run `path` names to `out` (see the module doc); returns export.json's contents."""
  if onnx:
    _import_onnx()  # fail before writing anything
  where = load.locate(path)
  variables = load.read_variables(where)
  model = load.build(where, variables)
  size = arch_lib.DEFAULT_IMAGE_SIZE[where.genotype.arch] if image_size is None else image_size
  export_params(where, variables, out)
  info = {
    'source': where.run_dir,
    'step': where.step,
    'genotype': ' '.join(where.genotype.paper_names),
    'classes': load.num_classes(variables),
    'params_run_dir': out,
  }
  if onnx:
    model_bytes = to_onnx(model, variables, size)
    files.write(os.path.join(out, ONNX), model_bytes)
    diff, scale = max_difference(model, variables, model_bytes, size)
    info |= {
      'onnx': os.path.join(out, ONNX),
      'input': {'name': INPUT, 'shape': ['N', size, size, 3], 'dtype': 'float32'},
      'output': {'name': OUTPUT, 'shape': ['N', info['classes']], 'dtype': 'float32'},
      'normalisation': 'pixels / 255, minus the mean, over the std of the training config',
      'max_abs_logit_difference': diff,
      'max_abs_logit': scale,
    }
  files.write(os.path.join(out, INFO), json.dumps(info, indent=2) + '\n')
  return info


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m bswap.export', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('run', help='a run directory, its workdir, checkpoints/ or one step')
  parser.add_argument('--out', required=True, help='the output directory')
  parser.add_argument(
    '--image-size', type=int, default=None, help='input size of the ONNX model (default: 32 or 224)'
  )
  parser.add_argument('--no-onnx', action='store_true', help='the parameters alone')
  args = parser.parse_args(argv)
  try:
    info = export(args.run, args.out, args.image_size, onnx=not args.no_onnx)
  except (ValueError, OSError) as e:
    print(f'error: {files.describe_error(e)}', file=sys.stderr)
    return 2
  print(f'Exported {info["source"]} step {info["step"]} ({info["genotype"]}) to {args.out}:')
  print(f'  parameters: {os.path.join(args.out, checkpoint.SUBDIR)} (bswap.load_student reads it)')
  if 'onnx' in info:
    print(
      f'  ONNX: {info["onnx"]}, input {INPUT} float32 {info["input"]["shape"]}; onnxruntime vs '
      f'bswap logits differ by at most {info["max_abs_logit_difference"]:.2g} '
      f'(largest logit {info["max_abs_logit"]:.3g})'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
