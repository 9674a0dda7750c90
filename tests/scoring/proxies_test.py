"""Zero-cost proxies (PROXIES.md) against closed forms and independent computations.

Formulas are checked on hand-made inputs (no network); the passes on a tiny
WRN-10-1 (16 px, batch 8, float64) against plain `jax.grad` code, finite
differences and the closed-form counts of `bswap.nets.accounting`; signs on
a dead network against the same network alive.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bswap import losses
from bswap.nets import accounting
from bswap.nets import arch
from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.nets import models
from bswap.scoring import engine
from bswap.scoring import fisher
from bswap.scoring import metrics
from bswap.scoring.proxies import aggregate
from bswap.scoring.proxies import candidate as candidate_lib
from bswap.scoring.proxies import formulas
from bswap.scoring.proxies import passes
from bswap.scoring.proxies import taps

K = formulas.K
SKEL = arch.wrn_skeleton(10, 1, image_size=16)
GENO = genotype_lib.Genotype(('G8B2', 'DConv', 'Conv'), 'wrn', 10, 1)
SEED = 5
# Everything but the pool-level aggregate.
NAMES = tuple(n for n in metrics.METRICS if metrics.per_candidate(n))


def _batch(dtype=jnp.float64, n=8):
  x = jax.random.normal(jax.random.PRNGKey(0), (n, 16, 16, 3), dtype)
  return x, jnp.array([0, 1, 2, 3, 0, 1, 2, 0])[:n]


def _candidate(dtype=jnp.float64, index=0, dead=False):
  x, y = _batch(dtype)
  cand = candidate_lib.Candidate.build(GENO, SKEL, SEED, index, x, y)
  if dead:  # a zero stem: every activation is constant, every weight gradient 0
    params = cand.variables['params']
    stem = {'conv': {'kernel': jnp.zeros_like(params['stem']['conv']['kernel'])}}
    cand.variables = {**cand.variables, 'params': {**params, 'stem': stem}}
  return cand


@pytest.fixture(scope='module')
def scores():
  """The metrics of the candidate, alive and dead, in float64 (one compile per pass).

  Not grasp and zen, whose signs a dead network cannot test (below) and whose
  passes are the dearest to compile (grasp's is checked on its own, under slow).
  """
  names = [n for n in NAMES if n not in ('grasp', 'zen')]
  with jax.enable_x64(True):
    alive = metrics.evaluate(_candidate(), names)
    dead = metrics.evaluate(_candidate(dead=True), names)
  return alive, dead


# Formulas on hand-made inputs -------------------------------------------------------------


def test_jacov_of_known_jacobians():
  anti = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])  # correlation -1: eigenvalues 0 and 2
  expected = -(np.log(K) + 1 / K + np.log(2 + K) + 1 / (2 + K))
  assert np.isclose(formulas.jacov(anti), expected, rtol=1e-12)
  orthogonal = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])  # uncorrelated: 1, 1
  assert np.isclose(formulas.jacov(orthogonal), -2 * (np.log(1 + K) + 1 / (1 + K)), rtol=1e-12)
  constant_row = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
  assert np.isnan(formulas.jacov(constant_row))
  assert aggregate.nbzero_postprocess('jacov', formulas.jacov(constant_row)) == -1e8


def test_epe_nas_of_a_known_jacobian_both_class_regimes():
  rows = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [5.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
  rho = np.corrcoef(rows[:2])[0, 1]
  s0 = 2 * np.log(1 + K) + 2 * np.log(abs(rho) + K)  # diagonal included
  s1 = float(np.log(1 + K))
  assert np.isclose(formulas.epe_nas(rows[:3], np.array([0, 0, 1]), 10), abs(s0) + abs(s1))
  # Over 100 classes: per-class means, singletons dropped, mean pairwise distance.
  r2 = np.corrcoef(rows[2:])[0, 1]
  s2 = (2 * np.log(1 + K) + 2 * np.log(abs(r2) + K)) / 2
  labels = np.array([0, 0, 7, 7])
  expected = 2 * abs(s0 / 2 - s2) / 2
  assert np.isclose(formulas.epe_nas(rows, labels, 1000), expected, rtol=1e-12)
  assert formulas.epe_nas(rows[:3], np.array([0, 0, 1]), 1000) == 0.0  # one class left


def test_nwot_of_known_binary_codes():
  codes = np.array([[1, 0, 1], [1, 1, 0]], np.float64)
  kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T  # [[3, 1], [1, 3]]
  np.testing.assert_array_equal(kernel, [[3, 1], [1, 3]])
  assert np.isclose(formulas.nwot(kernel[None]), np.log(8.0), rtol=1e-14)
  same = np.array([[[2.0, 2.0], [2.0, 2.0]]])  # identical codes: singular
  assert formulas.nwot(same) == -np.inf
  assert aggregate.nbzero_postprocess('nwot', formulas.nwot(same)) == -1e8


def test_meco_of_known_channel_correlations():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=50), rng.normal(size=50)
  rho = np.corrcoef(a, b)[0, 1]
  assert np.isclose(formulas.meco_term(np.stack([a, b], 1)), 1 - abs(rho), rtol=1e-12)
  constant = np.stack([a, np.ones(50)], 1)  # the constant channel's NaNs become 0
  assert formulas.meco_term(constant) == pytest.approx(0.0, abs=1e-15)
  assert formulas.meco([np.stack([a, b], 1), constant]) == pytest.approx(1 - abs(rho))


def test_zico_with_two_batches_is_the_closed_form():
  g1 = [jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.5])]
  g2 = [jnp.array([3.0, 2.0, 3.0]), jnp.array([0.5, 0.5])]  # equal entries: sigma 0, skipped
  sums = np.asarray(passes.zico_sums([g1, g2]))
  expected = (1 + 3) / 2 + (2 + 2) / 4  # (|g1| + |g2|) / |g1 - g2| where they differ
  np.testing.assert_allclose(sums, [expected, 0.0])
  assert formulas.zico(sums) == pytest.approx(np.log(expected))  # a zero layer is skipped


def test_rank_aggregates_by_hand():
  scores = {'a': [3.0, 1.0, 2.0], 'b': [1.0, 1.0, 5.0]}
  signs = {'a': 1, 'b': 1}
  np.testing.assert_allclose(aggregate.rankdata([1.0, 1.0, 5.0]), [1.5, 1.5, 3])
  np.testing.assert_allclose(aggregate.rank_aggregate(scores, signs, 'rank_sum'), [4.5, 2.5, 5])
  log_rank = [np.log(3 / 3 * 1.5 / 3), np.log(1 / 3 * 1.5 / 3), np.log(2 / 3 * 3 / 3)]
  np.testing.assert_allclose(aggregate.rank_aggregate(scores, signs), log_rank)
  # Copeland count of the pairwise majority (2 proxies: one strict win suffices).
  np.testing.assert_array_equal(aggregate.rank_aggregate(scores, signs, 'vote'), [2, 0, 2])
  # Lower-is-better is negated first; NaN ranks lowest.
  flipped = aggregate.rank_aggregate({'a': [3.0, np.nan, 2.0]}, {'a': -1}, 'rank_sum')
  np.testing.assert_allclose(flipped, [2, 1, 3])
  with pytest.raises(ValueError, match='aggregate'):
    aggregate.rank_aggregate(scores, signs, 'borda')


def test_nbzero_postprocess_logs_synflow_only():
  assert aggregate.nbzero_postprocess('synflow', math.e**3) == pytest.approx(3.0)
  assert aggregate.nbzero_postprocess('synflow', 0.0) == 0.0
  assert aggregate.nbzero_postprocess('snip', 7.5) == 7.5
  assert aggregate.nbzero_postprocess('zen', float('-inf')) == -1e8


# Passes on networks ------------------------------------------------------------------------


class _Chain(nn.Module):
  """ones -> 1x1 conv (3 -> 4) -> BN -> mean -> dense (4 -> 2): synflow's linear chain."""

  @nn.compact
  def __call__(self, x, train: bool):
    z = blocks.conv(4, 1, name='conv')(x)
    z = blocks.batch_norm(train, 'bn')(z)  # removed by synflow: else constant input -> 0
    return nn.Dense(2, name='dense')(jnp.mean(z, axis=(1, 2))), {}


def test_synflow_of_a_linear_chain_is_twice_its_path_sum():
  model = _Chain()
  variables = dict(model.init(jax.random.PRNGKey(1), jnp.ones((1, 4, 4, 3)), train=False))
  params = variables['params']
  params = {**params, 'dense': {**params['dense'], 'bias': jnp.array([5.0, -7.0])}}
  variables = {**variables, 'params': params}
  with jax.enable_x64(True):
    terms = np.asarray(passes.syn(model, variables, (1, 4, 4, 3)))
  w1 = np.abs(np.asarray(params['conv']['kernel'], np.float64)[0, 0])  # (3, 4)
  w2 = np.abs(np.asarray(params['dense']['kernel'], np.float64))  # (4, 2)
  path_sum = np.ones(3) @ w1 @ w2 @ np.ones(2)  # the biases enter R, not the score
  np.testing.assert_allclose(terms, [path_sum, path_sum], rtol=1e-13)


def _conv_only(depth=10, width=1, image=16):
  geno = genotype_lib.Genotype(('Conv',) * ((depth - 4) // 2), 'wrn', depth, width)
  return geno, models.build(geno)


def test_params_and_flops_match_the_closed_forms():
  geno, model = _conv_only()
  counts = passes.counts(model, (16, 16, 3))
  count = accounting.count(geno, 16)
  assert counts['params'] * 1e6 == count.params
  # tensorwatch's flops = MACs + 2 C H W per BN + C H W per ReLU + the pool's quirk.
  skel = geno.skeleton(16)
  extra = 0
  for slot in skel.slots:  # pre-activation Conv blocks: BN-ReLU in, BN-ReLU in the middle
    extra += 3 * slot.in_ch * slot.in_size**2 + 3 * slot.out_ch * slot.out_size**2
  s, c = skel.slots[-1].out_size, skel.head_channels
  extra += 3 * c * s * s + c * (s + 1) ** 2  # head BN-ReLU and global pool
  assert counts['flops'] * 1e6 == count.macs + extra
  resnet = genotype_lib.Genotype(('Conv',) * 16, 'resnet34', 34, 1)
  assert passes.counts(models.build(resnet), (32, 32, 3))['params'] * 1e6 == (
    accounting.count(resnet, 32).params
  )


def test_l2_norm_covers_every_conv_and_the_dense_kernel():
  cand = _candidate(jnp.float32)
  norms = passes.l2_norms(cand.variables)
  convs = sum(
    len(accounting.branch_layers(menu.get(n), s)[0]) for n, s in zip(GENO.blocks, SKEL.slots)
  )
  shortcuts = sum(s.in_ch != s.out_ch or s.stride != 1 for s in SKEL.slots)
  assert len(norms) == convs + shortcuts + 2  # + stem conv + dense
  leaves = jax.tree_util.tree_flatten_with_path(cand.variables['params'])[0]
  kernels = [v for p, v in leaves if p[-1].key == 'kernel']
  assert np.isclose(norms.sum(), sum(np.linalg.norm(np.asarray(k, np.float64)) for k in kernels))


def _plain_grads(cand):
  """dL/dparams of the untapped network, written plainly."""
  v = jax.tree.map(lambda a: a.astype(cand.images.dtype), cand.variables)

  def loss(params):
    (logits, _), _ = cand.model.apply(
      {**v, 'params': params}, cand.images, train=True, mutable=['batch_stats']
    )
    return losses.cross_entropy(logits, cand.labels)

  return v['params'], jax.jit(jax.grad(loss)), loss


def test_loss_pass_matches_plain_gradients_and_the_fisher_relation():
  with jax.enable_x64(True):
    cand = _candidate()
    out = cand.run('loss')
    params, grad, loss = _plain_grads(cand)
    g = grad(params)
    layer = lambda tree: [np.asarray(k) for _, k in taps.kernels(tree)]
    w, gk = layer(params), layer(g)
    np.testing.assert_allclose(out['grad_norm'], [np.linalg.norm(a) for a in gk], rtol=1e-10)
    snip = [np.abs(a * b).sum() for a, b in zip(w, gk)]
    np.testing.assert_allclose(out['snip'], snip, rtol=1e-10)
    plain = [(a * b).sum() for a, b in zip(w, gk)]  # signed: cancellation, so atol from snip
    np.testing.assert_allclose(out['plain'], plain, rtol=1e-10, atol=1e-10 * max(snip))
    # NASLib's term of a block's last conv = fan_in(last conv) x that block's potential.
    zeros = taps.zero_layer_perturbations(cand.model, cand.variables, cand.images)
    paths = [p for p, _ in taps.collect(zeros, blocks.LAYER_OUT)]
    last_convs = {('unit_b', 'conv'), ('unit_b', 'pointwise'), ('expand',)}
    for b in range(SKEL.num_blocks):
      (last,) = [p for p in paths if p[:2] == (f'block_{b}', 'branch') and p[2:] in last_convs]
      kernel = taps.kernel_of(params, last)
      fan_in = math.prod(kernel.shape[:-1])
      np.testing.assert_allclose(
        out['fisher'][paths.index(last)], fan_in * out['fisher_potential'][b], rtol=1e-10
      )
    # The dense term by hand: z = logits, g = (softmax - onehot) / N.
    logits = np.asarray(
      cand.model.apply(
        {**jax.tree.map(lambda a: a.astype(jnp.float64), cand.variables)},
        cand.images,
        train=True,
        mutable=['batch_stats'],
      )[0][0]
    )
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(10)[np.asarray(cand.labels)]) / len(logits)
    dense = SKEL.head_channels * np.sum(0.5 * np.mean((logits * dz) ** 2, axis=0))
    assert np.isclose(out['fisher'][paths.index(('head',))], dense, rtol=1e-10)


@pytest.mark.slow
def test_grasp_hessian_vector_product_matches_finite_differences():
  # eps 1e-5 flips ReLUs near their kink (errors of 10x); 1e-6 to 1e-8 agree to 1e-7.
  with jax.enable_x64(True):
    cand = _candidate()
    terms = np.asarray(cand.run('hvp'))
    params, grad, _ = _plain_grads(cand)
    g = grad(params)
    direction = jax.tree_util.tree_map_with_path(
      lambda p, a: a if taps.is_kernel(p) else jnp.zeros_like(a), g
    )
    eps = 1e-7
    shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
    hg = jax.tree.map(lambda a, b: (a - b) / (2 * eps), grad(shift(1)), grad(shift(-1)))
    expected = [
      np.sum(np.asarray(w) * np.asarray(h))
      for (_, w), (_, h) in zip(taps.kernels(params), taps.kernels(hg))
    ]
    np.testing.assert_allclose(terms, expected, rtol=1e-5, atol=1e-9)


def test_fisher_potential_of_score_all_equals_the_engine_in_float64(scores):
  alive, _ = scores
  with jax.enable_x64(True), engine.Pieces() as pieces:
    x, y = _batch()
    fast = engine.Engine(SKEL, pieces, 'xla')
    total, _ = fast.score(GENO, SEED, 0, x, y)
  assert np.isclose(alive['fisher_potential'], total, rtol=1e-9)


def test_scores_respect_their_sanity_bounds(scores):
  alive, _ = scores
  n = 8
  assert alive['jacov'] <= -n
  relu_widths = sum(math.prod(x.shape[1:]) for _, x in _relu_inputs())
  assert alive['nwot'] <= n * np.log(relu_widths)
  assert alive['synflow'] > 0 and alive['zico'] > 0 and alive['grad_norm'] > 0
  assert alive['params'] * 1e6 == accounting.count(GENO, 16).params


def _relu_inputs():
  cand = _candidate(jnp.float32)
  forward = lambda v, x: taps.forward(cand.model, v, x)[1]
  sown = jax.eval_shape(forward, cand.variables, cand.images)  # shapes only: no compile
  return taps.collect(sown[blocks.TAPS], blocks.RELU_IN)


# A dead network (zero stem: constant activations, zero weight gradients) against the same
# network alive. Left out: plain and grasp (signed: an alive net may score below 0), zen
# (re-initialises the weights, reviving the stem), params and flops (no weights read).
SIGNED = ('plain', 'grasp', 'zen', 'params', 'flops')


@pytest.mark.parametrize('name', [n for n in NAMES if n not in SIGNED])
def test_a_dead_network_scores_below_the_same_network_alive(scores, name):
  alive, dead = scores
  sign = metrics.get(name).sign
  a = aggregate.nbzero_postprocess(name, alive[name])
  d = aggregate.nbzero_postprocess(name, dead[name])
  assert sign * a > sign * d, (a, d)


def test_score_all_equals_each_metric_scored_alone(scores):
  alive, _ = scores
  config = ml_collections.ConfigDict({'seed': SEED})
  with jax.enable_x64(True):
    x, y = _batch()
    for name in ('jacov', 'snip', 'l2_norm'):
      total, _ = metrics.get(name).engines['reference'](config, SKEL, None)(GENO, 0, x, y)
      assert total == alive[name]


def test_zero_perturbations_take_the_probe_dtype():
  with jax.enable_x64(True):
    cand = _candidate()
    x = cand.images
    zeros = fisher.zero_perturbations(cand.model, cand.variables, x)
  assert {a.dtype for a in jax.tree.leaves(zeros)} == {jnp.dtype('float64')}


def test_zen_kernels_are_standard_normal_drawn_part_by_part():
  variables = models.init_variables(models.build(GENO, 10), SEED, 0, 16)
  key = jax.random.PRNGKey(7)
  drawn = passes.gaussian_kernels(variables, key)
  params, new = variables['params'], drawn['params']
  assert passes.part_order(params) == ['stem', 'block_0', 'block_1', 'block_2', 'head']
  kernels = np.concatenate([np.ravel(k) for _, k in taps.kernels(new)])
  assert abs(np.mean(kernels)) < 0.05 and abs(np.std(kernels) - 1) < 0.05  # N(0, 1), not He
  for p, name in enumerate(passes.part_order(params)):
    # What the block engine draws for part p alone: the same arrays.
    alone = passes.gaussian_part(params[name], jax.random.fold_in(key, p))
    jax.tree.map(np.testing.assert_array_equal, alone, new[name])
    for (path, before), (_, after) in zip(
      taps.collect_leaves(params[name]), taps.collect_leaves(new[name])
    ):
      if path[-1] == 'kernel':
        assert not np.allclose(before, after)
      else:  # biases and BN parameters as initialised
        np.testing.assert_array_equal(before, after)
  # Parts draw from their own keys: the first kernels of two blocks differ.
  first = [np.ravel(taps.kernels(new[f'block_{b}'])[0][1])[:8] for b in range(3)]
  assert not np.allclose(first[0], first[1]) and not np.allclose(first[1], first[2])
