"""python -m bswap.export: the parameters alone, and an ONNX network whose logits are bswap's."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from bswap import export
from bswap import load
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from tests import fake_runs
from tests.train.helpers import assert_trees_close

RESNET = genotype_lib.Genotype(
  ('Conv', 'DConvA4', 'DConv', 'ConvB2', 'G4B2', 'A2B2', 'DConvG2', 'G8B4') * 2, 'resnet34', 34, 1
)


def _logits(model, variables, images):
  return np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False)[0])(images))


@pytest.mark.slow
@pytest.mark.parametrize(
  'genotype, image_size, classes', [(fake_runs.MIXED_WRN, 8, 10), (RESNET, 32, 12)]
)
def test_the_onnx_models_logits_equal_bswaps_in_float32(tmp_path, genotype, image_size, classes):
  pytest.importorskip('jax2onnx')
  pytest.importorskip('onnxruntime')
  saved = fake_runs.write_run(tmp_path / 'run', genotype, num_classes=classes)[8]
  info = export.export(str(tmp_path / 'run'), str(tmp_path / 'out'), image_size)
  model_bytes = (tmp_path / 'out' / export.ONNX).read_bytes()
  # A batch size other than the export check's: the batch dimension is symbolic.
  images = np.random.default_rng(1).standard_normal((5, image_size, image_size, 3), np.float32)
  expected = _logits(load.build(load.locate(str(tmp_path / 'run')), saved), saved, images)
  got = export.run_onnx(model_bytes, images)
  assert got.shape == (5, classes)
  scale = max(1.0, float(np.max(np.abs(expected))))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
  assert info['max_abs_logit_difference'] <= 1e-5 * max(1.0, info['max_abs_logit'])
  written = json.loads((tmp_path / 'out' / export.INFO).read_text())
  assert written['input']['shape'] == ['N', image_size, image_size, 3]
  assert written['classes'] == classes and written['step'] == 8


def test_the_parameters_alone_are_a_run_directory_that_loads_the_same_network(tmp_path):
  saved = fake_runs.write_run(tmp_path / 'run', fake_runs.MIXED_WRN, steps=(4, 8))[8]
  info = export.export(str(tmp_path / 'run'), str(tmp_path / 'out'), onnx=False)
  assert 'onnx' not in info and not (tmp_path / 'out' / export.ONNX).exists()
  model, variables = load.load_student(str(tmp_path / 'out'))
  assert_trees_close(variables, saved, rtol=0, atol=0)
  assert models.genotype_of(model) == fake_runs.MIXED_WRN
  assert sorted(os.listdir(tmp_path / 'out' / 'checkpoints')) == ['8']
  size = lambda d: sum(f.stat().st_size for f in d.rglob('*') if f.is_file())
  # No optimiser state: about half a training checkpoint (momentum is as large as params).
  assert size(tmp_path / 'out' / 'checkpoints') < 0.75 * size(
    tmp_path / 'run' / 'checkpoints' / '8'
  )


def test_without_the_export_extra_onnx_is_a_clear_error_before_anything_is_written(
  tmp_path, monkeypatch, capsys
):
  fake_runs.write_run(tmp_path / 'run', fake_runs.MIXED_WRN)
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)
  assert export.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'out')]) == 2
  assert "pip install 'bswap[export]'" in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
  assert export.main([str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'o'), '--no-onnx']) == 2
  assert 'no bswap checkpoint' in capsys.readouterr().err
  assert export.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'out'), '--no-onnx']) == 0
  assert 'bswap.load_student reads it' in capsys.readouterr().out
  assert export.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'out'), '--no-onnx']) == 2
  assert 'holds checkpoints already' in capsys.readouterr().err
