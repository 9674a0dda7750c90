"""The canonical side of the proxy parity check (docs/proxy_parity.md). Needs PyTorch.

Not part of bswap and never imported by its tests: run it in a scratch
environment with torch and numpy (pandas too, for tensorwatch's flops/params):

  python launch/proxy_parity/torch_side.py --case /tmp/case \
      --naslib /path/to/NASLib --tensorwatch /path/to/tensorwatch \
      --zico /path/to/ZiCo --meco /path/to/MeCo [--json out.json]

Loads the case export_case.py wrote, rebuilds the network in PyTorch (the case's dtype,
one module per op application, as PROXIES.md section 1 asks), checks its
training-mode logits against bswap's, runs each canonical measure function
from the given checkouts, and prints the comparison as JSON and markdown.

The checkouts are imported without their packages' __init__ (which pull in
the whole of NASLib or tensorwatch's plotting); only the files PROXIES.md
section 10 names run, unchanged. Where canonical code draws its own random
numbers or needs CUDA, this script injects bswap's numbers or runs on CPU:
each such point is marked INJECT below.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import pathlib
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --- the network -------------------------------------------------------------------------


class Block(nn.Module):
  """A pre-activation WRN block; its modules under their Flax paths ('/' -> '__').

  The ModuleDict is never called, so hooks see only the leaf modules and the
  block itself (its output after the add), the set PROXIES.md section 5 fixes.
  """

  def __init__(self, spec: dict):
    super().__init__()
    self.spec, self.m = spec, nn.ModuleDict()
    s = spec
    self._bn_relu('bn_in', s['in_ch'])
    if s['family'] == 'basic':
      self._unit('branch/unit_a', s['in_ch'], s['out_ch'], s['stride'], s['groups'][0])
      self._bn_relu('branch/bn_mid', s['out_ch'])
      self._unit('branch/unit_b', s['out_ch'], s['out_ch'], 1, s['groups'][1])
    else:
      m = s['mid']
      self._conv('branch/reduce', s['in_ch'], m, 1)
      self._bn_relu('branch/bn_reduce', m)
      self._conv('branch/grouped', m, m, 3, s['stride'], s['groups'][0])
      self._bn_relu('branch/bn_grouped', m)
      self._conv('branch/expand', m, s['out_ch'], 1)
    if s['shortcut']:
      self._conv('shortcut', s['in_ch'], s['out_ch'], 1, s['stride'])

  def _conv(self, path, cin, cout, k, stride=1, groups=1):
    self.m[path.replace('/', '__')] = nn.Conv2d(
      cin, cout, k, stride, k // 2, groups=groups, bias=False
    )

  def _bn_relu(self, path, c):
    self.m[path.replace('/', '__')] = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    self.m[path.replace('/', '__') + '__relu'] = nn.ReLU()

  def _unit(self, path, cin, cout, stride, groups):
    if self.spec['standard']:
      self._conv(path + '/conv', cin, cout, 3, stride)
    else:
      self._conv(path + '/grouped', cin, cin, 3, stride, groups)
      self._bn_relu(path + '/bn', cin)
      self._conv(path + '/pointwise', cin, cout, 1)

  def last_conv(self) -> str:
    """The branch's last conv, whose output is the Fisher-potential probe."""
    if self.spec['family'] != 'basic':
      return 'branch/expand'
    return 'branch/unit_b/' + ('conv' if self.spec['standard'] else 'pointwise')

  def _op(self, path, x):
    return self.m[path.replace('/', '__')](x)

  def _br(self, path, x):
    return self._op(path + '/relu', self._op(path, x))

  def _unit_forward(self, path, x):
    if self.spec['standard']:
      return self._op(path + '/conv', x)
    return self._op(path + '/pointwise', self._br(path + '/bn', self._op(path + '/grouped', x)))

  def forward(self, x):
    a = self._br('bn_in', x)
    if self.spec['family'] == 'basic':
      y = self._unit_forward(
        'branch/unit_b', self._br('branch/bn_mid', self._unit_forward('branch/unit_a', a))
      )
    else:
      y = self._br('branch/bn_reduce', self._op('branch/reduce', a))
      y = self._op('branch/expand', self._br('branch/bn_grouped', self._op('branch/grouped', y)))
    return y + (self._op('shortcut', a) if self.spec['shortcut'] else x)


class Net(nn.Module):
  """Stem conv, blocks, head BN-ReLU, AdaptiveAvgPool2d(1), dense (NCHW)."""

  def __init__(self, spec: dict):
    super().__init__()
    self.stem = nn.Conv2d(3, spec['stem_channels'], 3, 1, 1, bias=False)
    self.blocks = nn.ModuleList([Block(b) for b in spec['blocks']])
    c = spec['head_channels']
    self.head_bn, self.head_relu = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1), nn.ReLU()
    self.pool, self.dense = nn.AdaptiveAvgPool2d(1), nn.Linear(c, spec['num_classes'])

  def forward_before_global_avg_pool(self, x):  # zen's hook point
    x = self.stem(x)
    for b in self.blocks:
      x = b(x)
    return self.head_relu(self.head_bn(x))

  def forward(self, x):
    return self.dense(torch.flatten(self.pool(self.forward_before_global_avg_pool(x)), 1))

  def modules_by_path(self) -> dict[str, nn.Module]:
    """{Flax path: module} for every module with parameters."""
    out = {'stem/conv': self.stem, 'head/bn': self.head_bn, 'head/dense': self.dense}
    for i, b in enumerate(self.blocks):
      for key, mod in b.m.items():
        if not isinstance(mod, nn.ReLU):
          out[f'block_{i}/' + key.replace('__', '/')] = mod
    return out


def load(net: Net, arrays, prefix='params', stats=True) -> None:
  """Copy Flax variables into the net (HWIO -> OIHW, (in, out) -> (out, in)); all must match."""
  used = set()

  def take(name):
    used.add(name)
    return torch.from_numpy(np.asarray(arrays[name], np.float64))

  with torch.no_grad():
    for path, mod in net.modules_by_path().items():
      p = f'{prefix}/{path}'
      if isinstance(mod, nn.Conv2d):
        mod.weight.copy_(take(p + '/kernel').permute(3, 2, 0, 1))
      elif isinstance(mod, nn.Linear):
        mod.weight.copy_(take(p + '/kernel').T)
        mod.bias.copy_(take(p + '/bias'))
      else:
        mod.weight.copy_(take(p + '/scale'))
        mod.bias.copy_(take(p + '/bias'))
        if stats:
          mod.running_mean.copy_(take(f'batch_stats/{path}/mean'))
          mod.running_var.copy_(take(f'batch_stats/{path}/var'))
  expected = {k for k in arrays.files if k.startswith(prefix + '/')}
  if stats:
    expected |= {k for k in arrays.files if k.startswith('batch_stats/')}
  if expected != used:
    raise ValueError(f'weights not transplanted: {sorted(expected ^ used)}')


# --- loading the canonical code -----------------------------------------------------------


def _stub(name: str, path: pathlib.Path | None = None, **attrs) -> types.ModuleType:
  """A module (a package when `path`) that skips the real __init__."""
  mod = types.ModuleType(name)
  if path is not None:
    mod.__path__ = [str(path)]
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


def _from_file(name: str, path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod
  spec.loader.exec_module(mod)
  return mod


def load_naslib(naslib: pathlib.Path, tensorwatch: pathlib.Path):
  """NASLib's pruners package (predictive, measures) with tensorwatch's ModelStats."""
  tw = _stub('tensorwatch', tensorwatch / 'tensorwatch')
  _stub('tensorwatch.model_graph', tensorwatch / 'tensorwatch' / 'model_graph')
  tw.ModelStats = importlib.import_module('tensorwatch.model_graph.torchstat_utils').ModelStats
  root = naslib / 'naslib'
  _stub('naslib', root)
  _stub('naslib.predictors', root / 'predictors')
  _stub('naslib.predictors.utils', root / 'predictors' / 'utils')
  _stub('naslib.predictors.utils.models')  # p_utils star-imports it; the measures use none of it
  return importlib.import_module('naslib.predictors.utils.pruners.predictive')


def load_zico(zico: pathlib.Path):
  _stub('global_utils')
  _stub('ModelLoader')
  return _from_file('canon_compute_zico', zico / 'ZeroShotProxy' / 'compute_zico.py')


def load_meco(meco: pathlib.Path):
  """MeCo's NB201 correlation script; its data/model imports are stubs (get_score uses none)."""
  _stub('foresight', meco / 'correlation' / 'foresight')
  _stub('foresight.dataset', torch=torch)  # the script gets `torch` from this star import
  _stub('foresight.models', nasbench2=None)
  _stub('foresight.weight_initializers', init_net=None)
  _stub('models', get_cell_based_tiny_net=None)
  return _from_file('canon_meco_nb201', meco / 'correlation' / 'NAS_Bench_201.py')


# --- running the measures -----------------------------------------------------------------


class Case:
  def __init__(self, path: pathlib.Path, dtype: str | None = None):
    self.arrays = np.load(path / 'case.npz')
    self.info = json.loads((path / 'case.json').read_text())
    # The default dtype too: canonical code makes tensors with it (torch.Tensor, torch.rand).
    self.dtype = getattr(torch, dtype or self.info.get('dtype', 'float64'))
    torch.set_default_dtype(self.dtype)
    self.images = self._nchw('images')
    self.labels = torch.from_numpy(self.arrays['labels'])

  def _nchw(self, name):
    return (
      torch.from_numpy(np.asarray(self.arrays[name], np.float64))
      .to(self.dtype)
      .permute(0, 3, 1, 2)
      .contiguous()
    )

  def net(self) -> Net:
    """A fresh network with bswap's initial weights (running statistics untouched)."""
    net = Net(self.info['network']).to(self.dtype).train()
    load(net, self.arrays)
    return net


def nas_lib_score(predictive, case: Case, name: str):
  """NASLib's find_measures for one measure, on one batch, CPU, no split (NB-Zero's call)."""
  loader = [(case.images.clone(), case.labels.clone())]
  info = ('random', 1, case.info['network']['num_classes'])
  return predictive.find_measures(
    case.net(), loader, info, torch.device('cpu'), F.cross_entropy, [name]
  )


def fisher_potential(predictive, case: Case) -> float:
  """PROXIES.md section 6's identity: the block's last-conv term of NASLib's fisher / fan_in."""
  net = case.net()
  loader = [(case.images.clone(), case.labels.clone())]
  info = ('random', 1, case.info['network']['num_classes'])
  arrays = predictive.find_measures_arrays(net, loader, info, torch.device('cpu'), ['fisher'])
  layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
  terms = {id(m): t for m, t in zip(layers, arrays['fisher'])}
  total = 0.0
  for b in net.blocks:
    conv = b.m[b.last_conv().replace('/', '__')]
    total += float(torch.sum(terms[id(conv)])) / math.prod(conv.weight.shape[1:])
  return total


def zen(predictive, case: Case) -> float:
  """NASLib's zen with bswap's N(0, 1) kernels and input draws (INJECT: both)."""
  zen_mod = sys.modules['naslib.predictors.utils.pruners.measures.zen']
  draws = iter([case._nchw('zen_x1'), case._nchw('zen_x2')])

  def gaussian(net):  # replaces network_weight_gaussian_init: bswap's draws, same rules
    load(net, case.arrays, prefix='zen/params', stats=False)
    return net

  shim = types.SimpleNamespace(
    **{k: getattr(torch, k) for k in dir(torch) if not k.startswith('__')}
  )
  shim.randn = lambda *a, **k: next(draws)  # INJECT: the canonical float32 draws become bswap's
  saved = zen_mod.network_weight_gaussian_init, zen_mod.torch
  zen_mod.network_weight_gaussian_init, zen_mod.torch = gaussian, shim
  try:
    return nas_lib_score(predictive, case, 'zen')
  finally:
    zen_mod.network_weight_gaussian_init, zen_mod.torch = saved


def zico(zico_mod, case: Case, halves: bool = True) -> float:
  """ZiCo's getzico (INJECT: CPU for .cuda()) over the batch's two halves (bswap's input)
  or, with halves False, over two full batches (ZiCo's)."""
  x, y = case.images, case.labels
  half = x.shape[0] // 2
  batches = [(x[:half], y[:half]), (x[half:], y[half:])]
  if not halves:
    batches = [(x, y), (case._nchw('images2'), torch.from_numpy(case.arrays['labels2']))]
  saved = torch.Tensor.cuda, nn.Module.cuda
  torch.Tensor.cuda = nn.Module.cuda = lambda self, *a, **k: self
  try:
    return float(zico_mod.getzico(case.net(), batches, F.cross_entropy))
  finally:
    torch.Tensor.cuda, nn.Module.cuda = saved


def meco(meco_mod, case: Case) -> float:
  """MeCo's get_score on the batch's first image, training mode, every module hooked."""
  return float(meco_mod.get_score(case.net(), case.images[:1].clone(), 'cpu', measure='meco'))


NB_ZERO = (
  'epe_nas fisher flops grad_norm grasp jacov l2_norm nwot params plain snip synflow'.split()
)


def canonical_scores(case: Case, args) -> dict[str, float]:
  predictive = load_naslib(args.naslib, args.tensorwatch)
  out = {name: float(nas_lib_score(predictive, case, name)) for name in NB_ZERO}
  out['zen'] = float(zen(predictive, case))
  out['fisher_potential'] = fisher_potential(predictive, case)
  if args.zico:
    zico_mod = load_zico(args.zico)
    out['zico'] = zico(zico_mod, case)
    if 'two_batches' in case.info['bswap']:
      out['zico (two batches)'] = zico(zico_mod, case, halves=False)
  if args.meco:
    out['meco'] = meco(load_meco(args.meco), case)
  return out


def logits_error(case: Case) -> float:
  with torch.no_grad():
    logits = case.net()(case.images).numpy()
  ref = case.arrays['logits']
  return float(np.max(np.abs(logits - ref)) / np.max(np.abs(ref)))


def rel(a, b) -> float | None:
  if a is None or b is None:
    return None
  if a == b:
    return 0.0
  return abs(a - b) / max(abs(a), abs(b))


def table(case: Case, canonical: dict) -> list[dict]:
  ref, fast = dict(case.info['bswap']['reference']), case.info['bswap'].get('engine', {})
  for name, value in case.info['bswap'].get('two_batches', {}).items():
    ref[f'{name} (two batches)'] = value
  rows = []
  for name in sorted(set(ref) | set(canonical)):
    c, r, e = canonical.get(name), ref.get(name), fast.get(name)
    rows.append(
      {
        'metric': name,
        'canonical': c,
        'bswap_reference': r,
        'bswap_engine': e,
        'rel_reference': rel(r, c),
        'rel_engine': rel(e, c),
      }
    )
  return rows


def markdown(rows: list[dict]) -> str:
  columns = (
    ('metric', 'metric', 's'),
    ('canonical', 'canonical', '.10g'),
    ('bswap_reference', 'bswap reference', '.10g'),
    ('bswap_engine', 'bswap engine', '.10g'),
    ('rel_reference', 'rel. diff (ref)', '.1e'),
    ('rel_engine', 'rel. diff (engine)', '.1e'),
  )
  lines = ['| ' + ' | '.join(c[1] for c in columns) + ' |', '|' + '---|' * len(columns)]
  for r in rows:
    cells = ('-' if r[k] is None else format(r[k], fmt) for k, _, fmt in columns)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--case', required=True, type=pathlib.Path)
  p.add_argument('--naslib', required=True, type=pathlib.Path, help='automl/NASLib checkout')
  p.add_argument('--tensorwatch', required=True, type=pathlib.Path, help='microsoft/tensorwatch')
  p.add_argument('--zico', type=pathlib.Path, help='SLDGroup/ZiCo checkout')
  p.add_argument('--meco', type=pathlib.Path, help='HamsterMimi/MeCo checkout')
  p.add_argument('--json', type=pathlib.Path, help='also write the result here')
  p.add_argument(
    '--dtype',
    choices=('float32', 'float64'),
    help="run the canonical side in this dtype, not the case's (float64: the float32 case's "
    'values without rounding, the reference both float32 sides are compared with)',
  )
  p.add_argument('--threads', type=int, default=1, help="torch's intra-op threads")
  args = p.parse_args(argv)
  torch.set_num_threads(args.threads)
  case = Case(args.case, args.dtype)
  err = logits_error(case)
  canonical = canonical_scores(case, args)
  rows = table(case, canonical)
  result = {
    'case': {k: case.info.get(k) for k in ('genotype', 'depth', 'width', 'batch', 'seed', 'dtype')},
    'canonical_dtype': str(case.dtype).removeprefix('torch.'),
    'image_size': case.info['network']['image_size'],
    'logits_max_rel_error': err,
    'versions': {
      **case.info.get('versions', {}),
      'torch': torch.__version__,
      'numpy_torch_side': np.__version__,
    },
    'rows': rows,
  }
  text = json.dumps(result, indent=1)
  print(text)
  print(f'\nlogits: max |torch - bswap| / max |bswap| = {err:.1e}\n')
  print(markdown(rows))
  if args.json:
    args.json.write_text(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
