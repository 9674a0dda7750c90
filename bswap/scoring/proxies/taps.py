"""Reading what a network sows for the proxies (`bswap.nets.blocks` TAPS).

A tapped forward returns the logits and the 'taps' collection: a tree with a
tuple of arrays per (module, name), one entry per application. `collect`
flattens it for one name in the tree's (sorted-path) order, which is the same
for every pass, so per-layer lists line up with `kernels(params)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bswap.nets import blocks


def _keys(path) -> tuple[str, ...]:
  return tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))


def collect(tree, name: str) -> list[tuple[tuple[str, ...], jax.Array]]:
  """[(module path, array)] of every tap `name` in a sown tree, in flattening order."""
  found = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = _keys(path)
    if keys and keys[-1] == name:
      found.append((keys[:-1], leaf))
  return found


def kernels(params) -> list[tuple[tuple[str, ...], jax.Array]]:
  """The layer set of PROXIES.md section 1: every conv kernel and the dense kernel."""
  return [(k[:-1], leaf) for k, leaf in collect_leaves(params) if k[-1] == 'kernel']


def collect_leaves(tree) -> list[tuple[tuple[str, ...], jax.Array]]:
  return [(_keys(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def is_kernel(path) -> bool:
  return _keys(path)[-1] == 'kernel'


def map_kernels(fn, params):
  """`params` with fn applied to every kernel leaf of the layer set (others unchanged)."""
  return jax.tree_util.tree_map_with_path(
    lambda p, leaf: fn(leaf) if is_kernel(p) else leaf, params
  )


def kernel_of(params, module_path: tuple[str, ...]) -> jax.Array:
  """The kernel of the layer tapped at `module_path` (a conv, or the head's dense)."""
  node = params
  for k in module_path:
    node = node[k]
  return node['kernel'] if 'kernel' in node else node['dense']['kernel']


def bias_of(params, module_path: tuple[str, ...]):
  """The bias of the layer tapped at `module_path`, or None (convs have none)."""
  node = params
  for k in module_path:
    node = node[k]
  node = node if 'kernel' in node else node['dense']
  return node.get('bias')


def forward(model: nn.Module, variables, images, collections=(blocks.TAPS,)):
  """Training-mode forward: (logits, {collection: tree}) for the collections asked."""
  (logits, _), state = model.apply(
    variables, images, train=True, mutable=['batch_stats', *collections]
  )
  return logits, {c: state.get(c, {}) for c in collections}


def zero_layer_perturbations(model: nn.Module, variables, images):
  """Zeros at every conv and dense output, at this batch size and in the images' dtype."""
  shapes = jax.eval_shape(
    lambda v, x: forward(model, v, x, (blocks.LAYER_PERTURBATIONS,))[1], variables, images
  )[blocks.LAYER_PERTURBATIONS]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, images.dtype), shapes)


def without_batch_norm():
  """A context in which every BatchNorm is the identity (synflow's network, PROXIES.md 3)."""

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
      return args[0]
    return next_fun(*args, **kwargs)

  return nn.intercept_methods(interceptor)
