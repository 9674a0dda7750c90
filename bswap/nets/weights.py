"""The seed contract's weight generator (SPEC sections 2 and 4).

Part `b` of candidate `i` (block b < B, stem B, head B + 1) is initialised
from the key `fold_in(fold_in(PRNGKey(seed), i), b)`. Inside a part, the
leaves of its variable tree (in the tree's flattening order, i.e. sorted
paths) take consecutive values from two streams of that key:

  * stream 0, standard normals: every conv kernel, scaled by
    sqrt(2 / (kh * kw * out_channels)) (fan-out, not divided by groups);
  * stream 1, uniforms on [-1, 1): the dense kernel, scaled by 1 / sqrt(fan_in);
  * constants for the rest: BN scale 1, biases 0, running mean 0, running var 1.

A stream is drawn in fixed chunks of `CHUNK` values, chunk j from
`fold_in(fold_in(key, stream), j)`, so a part's values never depend on how
many chunks were drawn and one compiled generator per power-of-two chunk
count serves every part of every network. Why not `module.init` under jit:
that compiles one initialiser per (block type, shape), ~1 s and ~7 MB of
resident executable each, the larger part of a cold search's compile time
and a quarter of its memory. The scaling happens in numpy, exact IEEE
float32, so the weights do not depend on the backend.

Shared initialisation (`config.search.init = 'shared'`, scoring only): part
`b` of type `t` takes the key `shared_key(seed, b, t)`, the same for every
candidate that has type t at part b, so candidates differ only where their
architectures do (common random numbers; docs/scoring_fidelity.md). A
student's training init stays the per-candidate contract.
"""

from __future__ import annotations

import functools
import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CHUNK = 1 << 14
NORMAL, UNIFORM = 0, 1
_STREAMS = {'normal': NORMAL, 'uniform': UNIFORM}
COLLECTIONS = ('params', 'batch_stats')


def part_key(seed: int, index: int, part: int) -> jax.Array:
  """The seed contract: the key of part `part` of candidate `index`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), index), part)


# Shared keys branch off the seed's key at this index: no candidate index reaches it.
SHARED_INDEX = (1 << 32) - 1
INITS = ('per_candidate', 'shared')


def shared_key(seed: int, part: int, type_name: str) -> jax.Array:
  """The key of part `part` of type `type_name` under shared initialisation.

  The type enters as the CRC-32 of its name (stable, unlike an index into a
  menu that may grow); stem and head pass their role ('stem', 'head').
  """
  key = part_key(seed, SHARED_INDEX, part)
  return jax.random.fold_in(key, zlib.crc32(type_name.encode()))


def check_init(init: str) -> str:
  if init not in INITS:
    raise ValueError(f'--config.search.init={init!r} is unknown; choose one of {", ".join(INITS)}')
  return init


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw(key: jax.Array, stream: int, chunks: int) -> jax.Array:
  """chunks * CHUNK values of `stream` (flat), chunk j from fold_in(key_stream, j)."""
  key = jax.random.fold_in(key, stream)

  def chunk(j):
    k = jax.random.fold_in(key, j)
    if stream == NORMAL:
      return jax.random.normal(k, (CHUNK,), jnp.float32)
    return jax.random.uniform(k, (CHUNK,), jnp.float32, minval=-1.0, maxval=1.0)

  return jax.vmap(chunk)(jnp.arange(chunks)).reshape(-1)


def _stream(key: jax.Array, stream: int, count: int):
  """At least `count` values of `stream`: numpy when concrete, traced under jit/eval_shape."""
  chunks = 1 << max(0, math.ceil(count / CHUNK) - 1).bit_length()  # power of two: few compiles
  values = _draw(key, stream, chunks)
  return values if isinstance(values, jax.core.Tracer) else np.asarray(values)


def leaf_rule(collection: str, name: str, shape: tuple[int, ...]) -> tuple[str, float]:
  """(distribution, scale) of one leaf: ('normal', std), ('uniform', bound), ('const', value)."""
  if collection == 'batch_stats':
    return 'const', 1.0 if name == 'var' else 0.0
  if name == 'scale':
    return 'const', 1.0
  if name == 'bias':
    return 'const', 0.0
  if name == 'kernel' and len(shape) == 4:  # HWIO conv
    return 'normal', math.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
  if name == 'kernel' and len(shape) == 2:  # dense (in, out)
    return 'uniform', 1.0 / math.sqrt(shape[0])
  raise ValueError(f'no initialisation rule for {collection} leaf {name!r} of shape {shape}')


@functools.cache
def _layout(module: nn.Module, in_channels: int):
  """(treedef, [(shape, stream or None, scale)], {stream: values needed}) of a part, traced.

  Parameter shapes depend on the input's channels only; a 4x4 dummy stands in.
  A constant leaf has stream None and its value as the scale.
  """
  dummy = jax.ShapeDtypeStruct((1, 4, 4, in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), dummy)
  shapes = {c: shapes[c] for c in COLLECTIONS if c in shapes}
  with_path, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  leaves, need = [], {}
  for path, leaf in with_path:
    dist, scale = leaf_rule(path[0].key, path[-1].key, leaf.shape)
    stream = _STREAMS.get(dist)  # None: a constant
    if stream is not None:
      need[stream] = need.get(stream, 0) + math.prod(leaf.shape)
    leaves.append((leaf.shape, stream, scale))
  return treedef, leaves, need


def part_variables(module: nn.Module, in_channels: int, key: jax.Array) -> dict:
  """{'params', 'batch_stats'} of one standalone part, drawn from `key` by the contract."""
  treedef, leaves, need = _layout(module, in_channels)
  streams = {s: _stream(key, s, n) for s, n in need.items()}
  taken = dict.fromkeys(streams, 0)
  values = []
  for shape, stream, scale in leaves:
    if stream is None:
      values.append(np.full(shape, scale, np.float32))
      continue
    size = math.prod(shape)
    flat = streams[stream][taken[stream] : taken[stream] + size]
    taken[stream] += size
    values.append((flat * np.float32(scale)).reshape(shape))
  return jax.tree_util.tree_unflatten(treedef, values)
