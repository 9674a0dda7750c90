"""2-D convolutions (NHWC, HWIO) with PyTorch's symmetric padding.

`conv2d(..., impl='xla')` is `lax.conv_general_dilated`, what `nn.Conv` runs.
`impl='fast'` computes the same function in forms XLA:CPU runs much faster
for the block menu's *grouped* convs, whose native implementation is slow on
that backend (measured forward + input-gradient, batch 128, 2-core CPU;
numbers in docs/benchmarks.md):

  * groups == 1: the native conv is already the fastest form; kept.
  * depthwise (one input channel per group, one output per input): a sum of
    k*k shifted slices times per-channel weights, pure elementwise work.
  * other grouped convs: the native *dense* conv of the block-diagonal kernel
    (zeros off the groups). It multiplies groups-times more, yet costs what a
    standard conv of that width costs, less than the native grouped conv at
    every menu shape.

Both forms only reorder float sums; the zero blocks add exact zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('xla', 'fast')


def resolve(impl: str, platform: str, flag: str = 'conv_impl') -> str:
  """`impl` ('auto', 'xla' or 'fast') for a backend: 'auto' is 'fast' on CPUs, else 'xla'.

  XLA:CPU runs grouped convolutions slowly and 'fast' computes the same
  function (same parameters) several times faster there (docs/benchmarks.md);
  GPUs and TPUs have native grouped convolutions.
  """
  if impl == 'auto':
    return 'fast' if platform == 'cpu' else 'xla'
  if impl not in IMPLS:
    raise ValueError(f"--config.{flag} must be 'auto', 'xla' or 'fast'; got {impl!r}")
  return impl


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, groups: int = 1, impl='xla'):
  """Conv of x (N, H, W, C) with kernel (k, k, C // groups, O), padding k // 2."""
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be 'xla' or 'fast'; got {impl!r}")
  k = kernel.shape[0]
  if impl == 'xla' or groups == 1:
    pad = ((k // 2, k // 2), (k // 2, k // 2))
    return lax.conv_general_dilated(
      x,
      kernel,
      (stride, stride),
      pad,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups,
    )
  if kernel.shape[2] == 1 and kernel.shape[3] == x.shape[-1]:
    return depthwise(x, kernel, stride)
  return block_diagonal(x, kernel, stride, groups)


def shifted_slices(x: jax.Array, k: int, stride: int) -> list[jax.Array]:
  """The k*k (N, H_out, W_out, C) views a k x k conv reads, in (row, col) order."""
  p = k // 2
  _, h, w, _ = x.shape
  h_out, w_out = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
  padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return [
    padded[:, i : i + stride * (h_out - 1) + 1 : stride, j : j + stride * (w_out - 1) + 1 : stride]
    for i in range(k)
    for j in range(k)
  ]


def depthwise(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise conv as sum over taps of shifted input * per-channel weight."""
  k = kernel.shape[0]
  taps = shifted_slices(x, k, stride)
  out = taps[0] * kernel[0, 0, 0]
  for t, tap in enumerate(taps[1:], start=1):
    out = out + tap * kernel[t // k, t % k, 0]
  return out


def block_diagonal_kernel(kernel: jax.Array, groups: int) -> jax.Array:
  """(k, k, C // groups, O) grouped kernel -> (k, k, C, O) dense kernel, zero off-group."""
  k, _, per_group, out = kernel.shape
  channels = per_group * groups
  tiled = jnp.tile(kernel, (1, 1, groups, 1))  # tiled[..., c, o] = kernel[..., c % g, o]
  in_group = jnp.arange(channels) // per_group
  out_group = jnp.arange(out) // (out // groups)
  mask = (in_group[:, None] == out_group[None, :]).astype(kernel.dtype)
  return tiled * mask


def block_diagonal(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
  """Grouped conv as the native dense conv of the block-diagonal kernel."""
  return conv2d(x, block_diagonal_kernel(kernel, groups), stride, 1, 'xla')
