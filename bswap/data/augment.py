"""Device-side image transforms: normalisation and the CIFAR-10 training augmentation.

Pure functions of a PRNG key, vectorised over the batch, run inside the jitted
steps (and for the Fisher batch), so that images cross to the devices as
uint8, a quarter of float32. `augment` is SPEC section 5's: a crop with
4-pixel zero padding, a flip, normalisation, Cutout 16.

Normalisation statistics are config fields (`config.data.mean`, `.std`) whose
defaults are the dataset's: `CIFAR10` (SPEC section 5), `CIFAR100` or `IMAGENET`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class Stats:
  """Per-channel (R, G, B) mean and standard deviation of pixels scaled to [0, 1]."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  def __post_init__(self):
    mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
      raise ValueError(
        f'config.data.mean and config.data.std must be 3 numbers each (R, G, B), the std '
        f'positive; got mean {self.mean} and std {self.std}'
      )
    object.__setattr__(self, 'mean', mean)
    object.__setattr__(self, 'std', std)


CIFAR10 = Stats((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# Per-channel mean and std over all pixels of the 50,000 training images (the values
# commonly published with CIFAR-100 training code).
CIFAR100 = Stats((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET = Stats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalize(images, stats: Stats = CIFAR10) -> jax.Array:
  """uint8 images -> float32, scaled to [0, 1], minus the mean, over the std (per channel)."""
  mean, std = np.array(stats.mean, np.float32), np.array(stats.std, np.float32)
  return (jnp.asarray(images).astype(jnp.float32) / 255.0 - mean) / std


@functools.partial(jax.jit, static_argnames=('pad', 'cutout', 'stats'))
def augment(
  key: jax.Array, images, *, pad: int = 4, cutout: int = 16, stats: Stats = CIFAR10
) -> jax.Array:
  """The CIFAR-10 training augmentation of a uint8 batch, returned normalised.

  Crop at a random offset from the images zero-padded by `pad` (black pixels,
  as padding precedes normalisation), flip left-right with probability 1/2,
  normalise, then Cutout: zero a `cutout` x `cutout` square (after
  normalisation) centred on a uniformly drawn pixel, clipped at the borders.
  pad=0 or cutout=0 turns that step off.

  Args:
    key: the only source of randomness; split for crop, flip and cutout.
    images: (N, H, W, 3) uint8.
    pad: zero padding on each side before the crop.
    cutout: side of the zeroed square.
    stats: the normalisation's per-channel mean and std.

  Returns:
    (N, H, W, 3) float32.
  """
  crop_key, flip_key, cutout_key = jax.random.split(key, 3)
  x = random_crop(crop_key, jnp.asarray(images), pad)
  x = random_flip(flip_key, x)
  return random_cutout(cutout_key, normalize(x, stats), cutout)


def random_crop(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
  """Each image cropped to its own size at a uniform offset in [0, 2 pad] of its zero-padding."""
  if pad == 0:
    return images
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
  crop = lambda image, offset: lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Each image mirrored left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """Cutout (DeVries & Taylor, 2017) as in its reference code.

  The centre (cy, cx) is uniform over the pixel grid and rows
  [cy - size//2, cy + size//2) x the same columns are zeroed, clipped at the
  borders: at most size x size pixels, fewer near an edge.
  """
  if size == 0:
    return images
  n, h, w, _ = images.shape
  y_key, x_key = jax.random.split(key)
  cy = jax.random.randint(y_key, (n, 1), 0, h)
  cx = jax.random.randint(x_key, (n, 1), 0, w)
  half = size // 2
  rows = (jnp.arange(h) >= cy - half) & (jnp.arange(h) < cy + half)  # (n, h)
  cols = (jnp.arange(w) >= cx - half) & (jnp.arange(w) < cx + half)  # (n, w)
  square = rows[:, :, None, None] & cols[:, None, :, None]
  return jnp.where(square, 0.0, images).astype(images.dtype)
