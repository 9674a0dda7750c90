"""The package's layering, checked on its import graph and its source.

Training never imports the search and scoring never imports training (the
pipeline module is the one place that knows both); the data interface hides
which pipeline feeds the devices: nothing outside bswap/data/ reads
config.data.pipeline.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'bswap'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob('*.py')}


def _imports(name: str) -> set[str]:
  """The bswap modules `name` imports directly, its parent packages included (Python runs them)."""
  found = set()
  tree = ast.parse(MODULES[name].read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from bswap.x import y` imports bswap.x.y if that is a module, else names from bswap.x.
      targets = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    else:
      continue
    for target in targets:
      if target in MODULES:
        found.add(target)
  parents = {'.'.join(m.split('.')[:i]) for m in found for i in range(1, m.count('.') + 1)}
  return (found | parents) & set(MODULES)


GRAPH = {name: _imports(name) for name in MODULES}


def _reachable(start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in GRAPH[todo.pop()] - seen:
      seen.add(nxt)
      todo.append(nxt)
  return seen


def _under(package: str) -> list[str]:
  return sorted(m for m in MODULES if m == package or m.startswith(package + '.'))


def test_the_graph_sees_the_known_edges():
  # Guards the parser itself: edges that certainly exist are found.
  assert 'bswap.search.run' in _reachable('bswap.pipeline')
  assert 'bswap.train.loop' in _reachable('bswap.pipeline')
  assert 'bswap.nets.models' in _reachable('bswap.scoring.engine')
  assert 'bswap.data' in _reachable('bswap.train.loop')


@pytest.mark.parametrize(
  'lower,upper',
  [
    ('bswap.train', 'bswap.search'),
    ('bswap.search', 'bswap.train'),
    ('bswap.scoring', 'bswap.train'),
    ('bswap.scoring', 'bswap.search'),
    ('bswap.data', 'bswap.scoring'),
    ('bswap.data', 'bswap.search'),
    ('bswap.data', 'bswap.train'),
    ('bswap.nets', 'bswap.data'),
    ('bswap.nets', 'bswap.scoring'),
    ('bswap.nets', 'bswap.search'),
    ('bswap.nets', 'bswap.train'),
    # Studies sit above search, scoring and training; nothing below knows them.
    ('bswap.nets', 'bswap.study'),
    ('bswap.data', 'bswap.study'),
    ('bswap.scoring', 'bswap.study'),
    ('bswap.search', 'bswap.study'),
    ('bswap.train', 'bswap.study'),
  ],
)
def test_a_layer_does_not_import_the_one_it_must_not_know(lower, upper):
  for module in _under(lower):
    reached = [m for m in _reachable(module) if m == upper or m.startswith(upper + '.')]
    assert not reached, f'{module} imports {reached}'


def test_only_the_pipeline_and_the_entry_points_know_search_and_training():
  both = [
    m
    for m in MODULES
    if any(r.startswith('bswap.search') for r in GRAPH[m])
    and any(r.startswith('bswap.train') for r in GRAPH[m])
  ]
  assert both == ['bswap.pipeline']


def test_the_study_reaches_the_search_only_through_its_population():
  # The study's runner trains (bswap.train) and takes its members from
  # bswap.study.population, the one study module that imports the search.
  for module in _under('bswap.study'):
    searches = any(r.startswith('bswap.search') for r in GRAPH[module])
    assert searches == (module == 'bswap.study.population'), module
  assert 'bswap.train.loop' in GRAPH['bswap.study.run']
  # The statistics and pictures are plain numpy and matplotlib.
  for module in ('bswap.study.stats', 'bswap.study.figures'):
    assert GRAPH[module] <= {'bswap', 'bswap.nets', 'bswap.nets.menu', 'bswap.study'}, module


def test_importing_training_loads_no_search_module():
  """The same, as Python sees it: what `import bswap.train.loop` puts in sys.modules."""
  code = (
    'import sys, bswap.train.loop, bswap.scoring.engine, bswap.scoring.metrics; '
    "print(sorted(m for m in sys.modules if m.startswith(('bswap.search', 'bswap.pipeline'))))"
  )
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == '[]'


def _reads_data_pipeline(path: pathlib.Path) -> list[int]:
  """Lines that read `<x>.data.pipeline`, `<x>.data['pipeline']` or `.data.get('pipeline')`."""
  lines = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Attribute) and node.attr == 'pipeline':
      value = node.value
      if isinstance(value, ast.Attribute) and value.attr == 'data':
        lines.append(node.lineno)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
      value = node.value
      if (
        node.slice.value == 'pipeline' and isinstance(value, ast.Attribute) and value.attr == 'data'
      ):
        lines.append(node.lineno)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      func = node.func
      reads = func.attr == 'get' and isinstance(func.value, ast.Attribute)
      if reads and func.value.attr == 'data' and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and first.value == 'pipeline':
          lines.append(node.lineno)
  return lines


def test_no_module_outside_bswap_data_reads_the_pipeline_name():
  outside = [p for p in PACKAGE.rglob('*.py') if (PACKAGE / 'data') not in p.parents]
  offenders = {
    str(p.relative_to(ROOT)): _reads_data_pipeline(p) for p in outside if _reads_data_pipeline(p)
  }
  assert not offenders
  # The check itself finds such reads.
  probe = PACKAGE / 'data' / '__init__.py'
  assert _reads_data_pipeline(probe), 'open_data reads config.data.pipeline'
