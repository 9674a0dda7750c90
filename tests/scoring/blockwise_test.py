"""The block engine for proxies against the whole-network reference path (float64, 1e-9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import bench
from bswap.nets import arch
from bswap.nets import blocks
from bswap.nets import models
from bswap.scoring import engine as engine_lib
from bswap.scoring import metrics
from bswap.scoring.proxies import blockwise
from bswap.scoring.proxies import candidate as candidate_lib
from bswap.scoring.proxies import passes
from bswap.scoring.proxies import taps
from bswap.search import sampler

MENU = ('Conv', 'DConv', 'G8B2', 'ConvB2')  # dense, depthwise, grouped; basic and bottleneck
NAMES = [
  n
  for n in metrics.METRICS
  if metrics.per_candidate(n) and set(metrics.get(n).passes) <= set(blockwise.PASSES)
]


# zico sums (|g1| + |g2|) / |g1 - g2| per weight, which multiplies rounding where the
# halves' gradients nearly agree: 1.2e-9 measured on ResNet-34 at 32 px (its 1-px stages'
# batch norm amplifies float64 rounding too), 6e-14 on the WRNs.
LOOSER = {'zico': 1e-8}


def _batch(size, n=8, dtype=jnp.float64):
  x = jax.random.normal(jax.random.PRNGKey(1), (n, size, size, 3), dtype)
  return x, jnp.arange(n) % 5  # repeated labels: epe_nas sees classes of 2


def _scores(names, *build_args):
  """{name: score} of Candidate.build(*build_args): the reference path, or the engine given."""
  return metrics.evaluate(candidate_lib.Candidate.build(*build_args), names)


def _compare(skel, genotypes, pieces, rtol=1e-9):
  x, y = _batch(skel.image_size)
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  for i, geno in enumerate(genotypes):
    ref = _scores(NAMES, geno, skel, 3, i, x, y)
    fast = _scores(NAMES, geno, skel, 3, i, x, y, proxy_engine)
    for name in NAMES:
      assert np.isfinite(ref[name]), name
      tol = max(rtol, LOOSER.get(name, 0))
      np.testing.assert_allclose(fast[name], ref[name], rtol=tol, err_msg=f'{name} {geno.blocks}')


def test_every_block_decomposable_metric_has_the_fast_engine():
  assert {'grad_norm', 'snip', 'plain', 'fisher', 'synflow', 'jacov', 'epe_nas', 'nwot'} <= set(
    NAMES
  )
  for name in NAMES:
    assert 'fast' in metrics.get(name).engines
  assert 'fast' not in metrics.get('grasp').engines  # whole network: one compile per candidate


def test_engine_equals_reference_in_float64_on_wrn(pieces):
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  # One genotype here (the reference compiles every pass per genotype); ten under slow.
  genotypes = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes
  with jax.enable_x64(True):
    _compare(skel, genotypes, pieces)
    compiled = len(pieces)
    _compare(skel, genotypes, pieces)  # the same candidates again: nothing new to compile
    assert len(pieces) == compiled


@pytest.mark.slow
@pytest.mark.exhaustive
def test_engine_equals_reference_in_float64_on_ten_wrn_genotypes(pieces):
  skel = arch.wrn_skeleton(10, 2, image_size=16)
  genotypes = sampler.sample(skel, 120_000, 10, seed=2, band=0.5, names=MENU).genotypes
  with jax.enable_x64(True):
    _compare(skel, genotypes, pieces)


@pytest.mark.slow
@pytest.mark.exhaustive
def test_engine_equals_reference_in_float64_on_resnet34(pieces):
  skel = arch.resnet34_skeleton(image_size=32, num_classes=10)
  # One genotype: the reference compiles five whole-ResNet-34 passes per genotype.
  genotypes = sampler.sample(skel, 10_000_000, 1, seed=0, band=0.8, names=MENU).genotypes
  with jax.enable_x64(True):
    _compare(skel, genotypes, pieces)


# float32 against float64, relative: 10x the largest difference measured on two WRN-16-2
# genotypes at 32 px, batch 64 (docs/benchmarks.md, "float32 noise floor"); synflow runs in
# float64 always and the counts read no activations.
FLOAT32_RTOL = {
  'fisher_potential': 3e-4,  # measured 2.8e-5
  'grad_norm': 4e-4,  # 3.5e-5
  'snip': 2e-4,  # 1.8e-5
  'plain': 2e-4,  # 1.1e-5 (signed: also an absolute bound, below)
  'fisher': 2e-4,  # 1.4e-5
  'jacov': 3e-5,  # 2.3e-6
  'epe_nas': 1e-2,  # 1.0e-3
  'nwot': 1e-7,  # 6.4e-9
  'synflow': 1e-12,  # 0: float64 always
  'l2_norm': 1e-12,  # 0
  'params': 0,
  'flops': 0,
  # Measured at this test's own setting (WRN-10-1, 16 px, batch 8, 2 genotypes):
  'zico': 2e-2,  # 1.9e-3: mean|g| / std(g) of two halves amplifies rounding where g_1 ~ g_2
  'meco': 1e-7,  # 7.9e-9
  'zen': 1e-6,  # 1.1e-7
}


@pytest.mark.slow
@pytest.mark.exhaustive
def test_float32_engine_is_within_the_measured_noise_floor_of_float64(pieces):
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  genotypes = sampler.sample(skel, 30_000, 2, seed=1, band=0.5, names=MENU).genotypes
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  x32, y = _batch(16, dtype=jnp.float32)
  for i, geno in enumerate(genotypes):
    f32 = _scores(NAMES, geno, skel, 3, i, x32, y, proxy_engine)
    with jax.enable_x64(True):
      x64 = x32.astype(jnp.float64)
      f64 = _scores(NAMES, geno, skel, 3, i, x64, y)
    for name in NAMES:
      atol = FLOAT32_RTOL['plain'] * f64['snip'] if name == 'plain' else 0
      np.testing.assert_allclose(f32[name], f64[name], rtol=FLOAT32_RTOL[name], atol=atol)


@pytest.mark.slow
@pytest.mark.exhaustive
def test_fresh_candidates_of_seen_block_types_compile_nothing(pieces):
  # Every engine pass (zico, meco and zen included) on new genotypes built from the block
  # types already seen at each position, at new indices (new weights): no XLA compile.
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  warm = sampler.sample(skel, 30_000, 2, seed=1, band=0.5, names=MENU).genotypes
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  with jax.enable_x64(True):
    x, y = _batch(16)
    score = lambda geno, i: _scores(NAMES, geno, skel, 3, i, x, y, proxy_engine)
    for i, geno in enumerate(warm):
      score(geno, i)
    built = pieces.builds
    rng = np.random.default_rng(0)
    with bench.CompileCounter() as counter:
      for i in range(3):
        blocks = tuple(warm[rng.integers(2)].blocks[b] for b in range(skel.num_blocks))
        score(type(warm[0])(blocks, 'wrn', 10, 1), 100 + i)
  assert counter.compiles == 0 and pieces.builds == built
  assert {'zico', 'meco', 'zen'} <= set(NAMES)


@pytest.mark.slow
def test_the_loss_pass_computes_what_its_metrics_read_and_nothing_else(pieces):
  # One metric alone runs a loss pass with only its outputs (snip: weight gradients; fisher
  # and plain: layer cotangents, plain as sum (z - b) * dL/dz; fisher_potential: probes),
  # equal to the reference in float64.
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  geno = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes[0]
  loss_names = ['grad_norm', 'snip', 'plain', 'fisher', 'fisher_potential']
  assert blockwise.loss_outputs(['snip']) == ('weights',)
  assert blockwise.loss_outputs(['fisher', 'nwot']) == ('layers',)
  assert blockwise.loss_outputs(['plain', 'snip']) == ('weights',)
  assert blockwise.loss_outputs(loss_names) == blockwise.ALL_LOSS_OUTPUTS
  computed = {
    'snip': {'grad_norm', 'snip', 'plain'},
    'fisher': {'fisher', 'plain'},
    'plain': {'fisher', 'plain'},
    'fisher_potential': {'fisher_potential'},
  }
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  with jax.enable_x64(True):
    x, y = _batch(16)
    ref = _scores(loss_names, geno, skel, 3, 0, x, y)
    for names in (['snip'], ['fisher'], ['plain'], ['fisher_potential']):
      got = proxy_engine.run('loss', geno, 3, 0, x, y, blockwise.loss_outputs(names))
      assert set(got) == computed[names[0]]
      fast = _scores(names, geno, skel, 3, 0, x, y, proxy_engine)
      for name in names:
        np.testing.assert_allclose(fast[name], ref[name], rtol=1e-9, err_msg=name)


def test_part_codes_equal_the_plain_kernels_bit_for_bit():
  # The engine sums 2 C C^T - r_i - r_j + D per ReLU; the reference C C^T + (1-C)(1-C)^T.
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  geno = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes[0]
  model = models.build(geno, skel.num_classes)
  x, _ = _batch(16, n=12, dtype=jnp.float32)
  _, sown = taps.forward(model, models.init_variables(model, 3, 0, 16), x)
  plain = np.sum(np.asarray(passes.relu_kernels(sown[blocks.TAPS]), np.float64), axis=0)
  fast = np.asarray(blockwise._part_codes(sown[blocks.TAPS], 12), np.float64)
  np.testing.assert_array_equal(fast, plain)
  assert plain.min() < plain.max()  # codes that differ between images


def test_zico_on_an_odd_batch_equals_the_reference(pieces):
  # Halves of 2 and 3 images: each half's forward pieces and pullbacks are their own.
  skel = arch.wrn_skeleton(10, 1, image_size=8)
  geno = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes[0]
  with jax.enable_x64(True):
    x, y = _batch(8, n=5)
    ref = _scores(['zico'], geno, skel, 3, 0, x, y)
    fast = _scores(['zico'], geno, skel, 3, 0, x, y, blockwise.ProxyEngine(skel, pieces, 'fast'))
  np.testing.assert_allclose(fast['zico'], ref['zico'], rtol=LOOSER['zico'])


@pytest.mark.slow
def test_codes_and_jac_come_from_the_loss_pass_forward_sweep(pieces):
  # With a loss metric asked for, nwot's codes and jacov's Jacobian come from the loss
  # pass's forward sweep (its kept pullbacks give J): equal to their own passes, the loss
  # terms unchanged, whatever the loss pass forms.
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  geno = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes[0]
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  with jax.enable_x64(True):
    x, y = _batch(16)
    run = lambda name: proxy_engine.run(name, geno, 3, 0, x, y)
    codes, jac = run('codes'), run('jac')
    for outputs in (('weights',), ('probe',), ('layers',), blockwise.ALL_LOSS_OUTPUTS):
      alone = proxy_engine.run('loss', geno, 3, 0, x, y, outputs)
      fused = proxy_engine.run_loss(geno, 3, 0, x, y, outputs, also=('codes', 'jac'))
      np.testing.assert_array_equal(fused['codes'], codes)  # integer kernels: exact
      np.testing.assert_allclose(fused['jac'], jac, rtol=1e-9, atol=1e-12 * np.abs(jac).max())
      assert set(fused['loss']) == set(alone)
      for k in alone:
        np.testing.assert_allclose(fused['loss'][k], alone[k], rtol=1e-9, err_msg=k)
    # Scored together, nwot and jacov run no forward sweep of their own.
    fresh = engine_lib.Pieces()
    cand = candidate_lib.Candidate.build(
      geno, skel, 3, 0, x, y, blockwise.ProxyEngine(skel, fresh, 'fast')
    )
    metrics.evaluate(cand, ['snip', 'nwot', 'jacov'])
  kinds = {key[0] for key in fresh.keys()}
  assert 'proxy-jac-backward' in kinds and not kinds & {'proxy-codes', 'proxy-forward'}


@pytest.mark.slow
@pytest.mark.exhaustive
def test_grasp_on_the_whole_network_with_fast_convs_equals_the_reference(pieces):
  # grasp has no block engine: score_all runs it on the whole network with the engine's
  # convolutions ('fast': grouped convs as block-diagonal dense ones), the reference with
  # native ones. The same function: equal in float64.
  skel = arch.wrn_skeleton(10, 1, image_size=16)
  geno = sampler.sample(skel, 30_000, 1, seed=1, band=0.5, names=MENU).genotypes[0]
  assert 'whole' in metrics.get('grasp').engines
  proxy_engine = blockwise.ProxyEngine(skel, pieces, 'fast')
  with jax.enable_x64(True):
    x, y = _batch(16)
    ref = _scores(['grasp'], geno, skel, 3, 0, x, y)
    cand = candidate_lib.Candidate.build(geno, skel, 3, 0, x, y, proxy_engine)
    assert cand.model.conv_impl == 'fast'
    np.testing.assert_allclose(metrics.evaluate(cand, ['grasp'])['grasp'], ref['grasp'], rtol=1e-9)
