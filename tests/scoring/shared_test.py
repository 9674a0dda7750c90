"""Shared initialisation: its weights, the grouped engine against one at a time, the settings."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import defaults
from bswap.nets import arch
from bswap.nets import genotype as genotype_lib
from bswap.scoring import engine
from bswap.scoring import fisher_engines
from bswap.scoring import metrics
from bswap.scoring import shared
from bswap.search import record

SKEL = arch.wrn_skeleton(10, 2, image_size=8)  # 3 blocks
SEED = 3
_G = lambda *names: genotype_lib.Genotype(names, 'wrn', 10, 2)
# Blocks 0 and 2 shared by pairs, dense / depthwise / block-diagonal grouped convs.
GENOTYPES = [
  _G('G8B2', 'Conv', 'DConv'),
  _G('G8B2', 'DConv', 'DConv'),
  _G('DConv', 'Conv', 'G8B2'),
  _G('G8B2', 'Conv', 'G8B2'),
  _G('DConv', 'DConv', 'DConv'),
]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a, b) -> bool:
  la, lb = _leaves(a), _leaves(b)
  return len(la) == len(lb) and all(
    x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb)
  )


def test_shared_weights_depend_on_position_and_type_only():
  # Two engines: the second draws afresh (no cache), so equality is the generator's.
  a = engine.Engine(SKEL, engine.Pieces(), init='shared').variables(GENOTYPES[0], SEED, 0)
  b = engine.Engine(SKEL, engine.Pieces(), init='shared').variables(GENOTYPES[1], SEED, 7)
  # stem, blocks 0..2, head: G8B2 / DConv agree at blocks 0 and 2; Conv vs DConv at block 1.
  assert [_same(x, y) for x, y in zip(a, b)] == [True, True, False, True, True]
  # Another seed, or the per-candidate contract, gives other weights at the same place.
  other_seed = engine.Engine(SKEL, engine.Pieces(), init='shared').variables(GENOTYPES[0], 4, 0)
  per_candidate = engine.Engine(SKEL, engine.Pieces()).variables(GENOTYPES[0], SEED, 0)
  assert not any(_same(x, y) for x, y in zip(a, other_seed))
  assert not any(_same(x, y) for x, y in zip(a, per_candidate))


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.slow
def test_grouped_scores_equal_one_at_a_time_with_the_same_shared_weights(pieces):
  y = jnp.arange(4)
  one = engine.Engine(SKEL, pieces, 'fast', init='shared')
  # chunk 3, buckets of at most 2: groups split across chunks and buckets padded.
  grouped = shared.Shared(SKEL, pieces, 'fast', chunk=3, max_bucket=2)

  def scores(x, per_row=False):
    xs = [x + 0.1 * i if per_row else x for i in range(len(GENOTYPES))]
    items = [(g, i, xs[i], y) for i, g in enumerate(GENOTYPES)]
    got = np.asarray([t for t, _ in grouped.score_chunk(items, SEED)])
    want = np.asarray([one.score(g, SEED, i, xs[i], y)[0] for i, g in enumerate(GENOTYPES)])
    return got, want

  with jax.enable_x64(True):
    x64 = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3), jnp.float64)
    got64, want64 = scores(x64)
    np.testing.assert_allclose(got64, want64, rtol=1e-9)
    got_rows, want_rows = scores(x64, per_row=True)  # a batch per candidate: no shared stem
    np.testing.assert_allclose(got_rows, want_rows, rtol=1e-9)
  got32, want32 = scores(x64.astype(jnp.float32))
  # float32: the grouped path is as close to float64 as one at a time is (its noise floor).
  floor = _rel(want32, want64)
  assert _rel(got32, want64) <= 2 * floor + 1e-6, (_rel(got32, want64), floor)
  assert np.argmax(got32) == np.argmax(want64)


def test_init_is_recorded_only_when_shared_and_a_change_is_a_mismatch():
  config = defaults.cifar_config(400_000)
  assert 'init' not in record.search_settings(config)  # older records still match
  recorded = record.search_settings(config)
  config.search.init = 'shared'
  assert record.search_settings(config)['init'] == 'shared'
  assert any(m.startswith('init:') for m in record.settings_mismatches(recorded, config))


def test_auto_under_shared_init_is_the_grouped_engine_off_cpus_only():
  config = defaults.cifar_config(400_000)
  config.search.init = 'shared'
  # The grouped engine's CPU time is unmeasured: 'fast' scores shared weights there.
  assert metrics.resolve_engine(config, 'cpu') == 'fast'
  assert metrics.resolve_engine(config, 'gpu') == 'batched'
  config.search.engine = 'fast'  # one at a time with shared weights: the tests' reference
  assert metrics.resolve_engine(config, 'cpu') == 'fast'


def test_unknown_init_and_the_reference_engine_are_refused(pieces):
  config = defaults.cifar_config(400_000)
  config.search.init = 'common'
  with pytest.raises(ValueError, match='search.init'):
    fisher_engines.init_of(config)
  config.search.init = 'shared'
  config.search.engine = 'reference'
  with pytest.raises(ValueError, match='fast and batched'):
    metrics.make_scorer(config, SKEL, pieces)


def _fidelity_module():
  path = pathlib.Path(__file__).resolve().parents[2] / 'launch' / 'scoring_fidelity.py'
  spec = importlib.util.spec_from_file_location('scoring_fidelity', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_agreement_of_a_ranking_with_itself_and_its_reverse():
  fidelity = _fidelity_module()
  x = np.arange(20.0)
  same = fidelity.agreement(x, x)
  assert same['spearman'] == pytest.approx(1.0) and same['top1_same'] and same['top10_overlap'] == 1
  rev = fidelity.agreement(-x, x)
  assert rev['spearman'] == pytest.approx(-1.0) and rev['top1_reference_rank'] == 20
  assert rev['top10_overlap'] == 0
  assert fidelity.parse_variant('sh64B') == ('shared', 64, 1)
  with pytest.raises(ValueError, match='INIT BATCH SEED'):
    fidelity.parse_variant('shared64')


@pytest.mark.slow
def test_the_fidelity_script_writes_its_table_and_reuses_its_scores(tmp_path):
  fidelity = _fidelity_module()
  doc = tmp_path / 'doc.md'
  doc.write_text(f'Prose above.\n{fidelity.BEGIN}\nold table\n{fidelity.END}\nProse below.\n')
  args = ['--smoke', '--out', str(tmp_path), '--candidates', '3', '--variants', 'pc4A,pc4B,sh4A']
  assert fidelity.main([*args, '--doc', str(doc)]) == 0
  text = doc.read_text()
  assert text.startswith('Prose above.') and text.endswith('Prose below.\n')
  assert 'old table' not in text
  for variant in ('pc4A', 'pc4B', 'sh4A'):
    assert f'| {variant} |' in text
  assert '| pc4A vs pc4B |' in text  # the seed-to-seed floor
  cached = (tmp_path / 'scores' / 'sh4A.jsonl').read_text()
  assert fidelity.main([*args, '--report-only']) == 0  # from the caches, nothing rescored
  assert (tmp_path / 'scores' / 'sh4A.jsonl').read_text() == cached
  tables = (tmp_path / 'fidelity.md').read_text().split('\n', 1)[1]  # past the command line
  assert tables in text
