import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap.nets import blocks
from bswap.nets import menu
from bswap.nets import models
from bswap.nets import weights

KEY = weights.part_key(0, 3, 1)


def _flat(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_draws_do_not_depend_on_how_many_chunks_were_drawn():
  two = np.asarray(weights._draw(KEY, weights.NORMAL, 2))
  eight = np.asarray(weights._draw(KEY, weights.NORMAL, 8))
  np.testing.assert_array_equal(two, eight[: two.size])
  uniform = np.asarray(weights._draw(KEY, weights.UNIFORM, 2))
  assert not np.allclose(uniform, two)  # the two streams are independent draws
  assert uniform.min() >= -1 and uniform.max() < 1


@pytest.mark.slow
@pytest.mark.parametrize('post_activation', [False, True])
def test_every_leaf_follows_flax_initialisers_distribution(post_activation):
  """Ours and Flax's `module.init` draw other values from the same distributions.

  For every leaf of every block type (plus stems and heads): constants are
  equal; normal leaves, divided by our std, have unit std in Flax's draw too
  (pooled, and per leaf where it is large enough to tell a wrong fan); dense
  kernels share the uniform bound.
  """
  cls = blocks.block_class(post_activation)
  parts = [(cls(name, 64, 2), 32) for name in menu.NAMES]
  parts += [(models.Stem(16), 3), (models.PoolStem(), 3), (models.PreActHead(10), 64)]
  parts += [(models.PoolHead(10), 64)]
  pooled = []
  for module, channels in parts:
    ours = weights.part_variables(module, channels, KEY)
    theirs = module.init(KEY, jnp.zeros((1, 4, 4, channels)), train=False)
    theirs = {c: theirs[c] for c in weights.COLLECTIONS if c in theirs}
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for (path, mine), (_, flax_value) in zip(_flat(ours), _flat(theirs)):
      assert mine.dtype == np.float32 and mine.shape == flax_value.shape
      dist, scale = weights.leaf_rule(path[0].key, path[-1].key, mine.shape)
      flax_value = np.asarray(flax_value)
      if dist == 'const':
        np.testing.assert_array_equal(mine, flax_value)
      elif dist == 'uniform':
        for v in (mine, flax_value):
          assert np.abs(v).max() <= scale and np.abs(v).max() > 0.9 * scale
      else:
        pooled.append(flax_value.ravel() / scale)
        if mine.size >= 512:  # a wrong fan (x2 at least) shows at this size
          assert abs(flax_value.std() / scale - 1) < 0.2, path
          assert abs(mine.std() / scale - 1) < 0.2, path
  assert abs(np.concatenate(pooled).std() - 1) < 0.01


def test_traced_parts_have_the_concrete_shapes_and_jitted_parts_its_values():
  module = blocks.PreActBlock('G2B2', 64, 2)
  concrete = weights.part_variables(module, 32, KEY)
  abstract = jax.eval_shape(lambda k: weights.part_variables(module, 32, k), KEY)
  shape_of = lambda x: (x.shape, np.dtype(x.dtype))
  assert jax.tree.map(shape_of, abstract) == jax.tree.map(shape_of, concrete)
  jitted = jax.jit(lambda k: weights.part_variables(module, 32, k))(KEY)
  jax.tree.map(np.testing.assert_array_equal, jitted, concrete)


def test_parts_are_independent_and_large_parts_span_chunks():
  module = blocks.PreActBlock('Conv', 128, 1)  # 2 x 147,456 normals: 18 chunks
  a = weights.part_variables(module, 128, weights.part_key(0, 0, 2))
  b = weights.part_variables(module, 128, weights.part_key(0, 0, 3))
  ka, kb = (v['params']['branch']['unit_a']['conv']['kernel'] for v in (a, b))
  assert not np.allclose(ka, kb)
  second = a['params']['branch']['unit_b']['conv']['kernel']
  assert abs(second.std() / math.sqrt(2 / (9 * 128)) - 1) < 0.02


def test_unknown_leaf_is_refused():
  with pytest.raises(ValueError, match='no initialisation rule'):
    weights.leaf_rule('params', 'embedding', (10, 4, 4))
