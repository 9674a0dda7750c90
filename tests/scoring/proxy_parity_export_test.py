"""launch/proxy_parity/export_case.py: what the PyTorch side reads is complete and consistent.

The torch side itself is never imported here (no torch in the test environment).
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap.nets import arch
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.nets import models
from bswap.scoring.proxies import formulas
from bswap.scoring.proxies import passes
from bswap.scoring.proxies import taps

SCRIPT = pathlib.Path(__file__).parents[2] / 'launch' / 'proxy_parity' / 'export_case.py'
BLOCKS = ('DConvG2', 'G8B2', 'Conv')  # grouped basic, grouped bottleneck, plain; two shortcuts


def _load():
  spec = importlib.util.spec_from_file_location('export_case', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def case(tmp_path_factory):
  export = _load()
  out = tmp_path_factory.mktemp('case')
  rc = export.main(
    ['--out', str(out), '--depth', '10', '--width', '1', '--blocks', ','.join(BLOCKS)]
    + ['--image_size', '8', '--batch', '4', '--metrics', 'zen,nwot']
  )
  assert rc == 0
  return np.load(out / 'case.npz'), json.loads((out / 'case.json').read_text())


def _geno():
  return genotype_lib.Genotype(BLOCKS, arch.WRN, 10, 1)


def test_every_variable_is_exported_in_float64(case):
  arrays, _ = case
  variables = models.init_variables(models.build(_geno()), 0, 0, 8)
  for prefix in ('params', 'batch_stats'):
    leaves = taps.collect_leaves(variables[prefix])
    exported = {k for k in arrays.files if k.startswith(prefix + '/')}
    assert exported == {'/'.join((prefix, *keys)) for keys, _ in leaves}
    for keys, leaf in leaves:
      got = arrays['/'.join((prefix, *keys))]
      assert got.dtype == np.float64
      np.testing.assert_array_equal(got, np.asarray(leaf, np.float64))


def test_the_structure_reproduces_every_kernel_shape(case):
  arrays, info = case
  net = info['network']
  assert [b['type'] for b in net['blocks']] == list(BLOCKS)
  for i, b in enumerate(net['blocks']):
    p = f'params/block_{i}/'
    assert (p + 'shortcut/kernel' in arrays.files) == b['shortcut']
    if b['standard']:
      assert arrays[p + 'branch/unit_a/conv/kernel'].shape[2:] == (b['in_ch'], b['out_ch'])
    elif b['family'] == menu.BASIC:
      assert arrays[p + 'branch/unit_a/grouped/kernel'].shape[2:] == (
        b['in_ch'] // b['groups'][0],
        b['in_ch'],
      )
      assert arrays[p + 'branch/unit_b/pointwise/kernel'].shape[3] == b['out_ch']
    else:
      m = b['mid']
      assert arrays[p + 'branch/grouped/kernel'].shape[2:] == (m // b['groups'][0], m)
      assert arrays[p + 'branch/expand/kernel'].shape[2:] == (m, b['out_ch'])


def test_the_exported_zen_draws_and_logits_are_bswaps(case):
  arrays, info = case
  model = models.build(_geno())
  with jax.enable_x64(True):
    stats = models.init_variables(model, 0, 0, 8)['batch_stats']
    gaussian = {'params': _tree(arrays, 'zen/params/'), 'batch_stats': stats}
    x1, x2 = jnp.asarray(arrays['zen_x1']), jnp.asarray(arrays['zen_x2'])
    zen = formulas.zen(*passes.zen(model, gaussian, x1, x2))
    params = {'params': _tree(arrays, 'params/'), 'batch_stats': stats}
    logits, _ = taps.forward(model, params, jnp.asarray(arrays['images']), ())
  np.testing.assert_allclose(zen, info['bswap']['reference']['zen'], rtol=1e-12)
  np.testing.assert_allclose(np.asarray(logits), arrays['logits'], rtol=1e-12)
  assert info['bswap']['engine']['nwot'] == pytest.approx(info['bswap']['reference']['nwot'])


def _tree(arrays, prefix):
  tree = {}
  for k in arrays.files:
    if k.startswith(prefix):
      *path, leaf = k[len(prefix) :].split('/')
      node = tree
      for p in path:
        node = node.setdefault(p, {})
      node[leaf] = jnp.asarray(arrays[k])
  return tree


def test_a_bad_block_list_exits_with_one_line_and_writes_nothing(tmp_path, capsys):
  rc = _load().main(['--out', str(tmp_path / 'x'), '--depth', '10', '--blocks', 'Conv,Nope,Conv'])
  assert rc == 2
  assert 'Nope' in capsys.readouterr().err
  assert not (tmp_path / 'x').exists()
