"""ImageNet's standard preprocessing: crop and flip for training, centre crop for evaluation.

Host side, on PIL images of any size, with torchvision's semantics:

  training    RandomResizedCrop(size) (a box of 8-100% of the area and aspect
              ratio 3/4 to 4/3, log-uniform; 10 tries, then the centre-crop
              fallback), resized bilinearly to size x size, then
              RandomHorizontalFlip;
  evaluation  Resize(round(size * 256 / 224)) of the shorter side, then
              CenterCrop(size).

Both return uint8 (size, size, 3) arrays, and every random choice comes from
the numpy Generator passed in. Normalisation (augment.normalize with ImageNet's
mean and std) runs on the devices, so that batches cross to them as uint8, a
quarter of float32.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

AREA = (0.08, 1.0)  # RandomResizedCrop's scale: the box's share of the image area
ASPECT = (3 / 4, 4 / 3)  # and its width / height
EVAL_RESIZE_RATIO = 256 / 224  # shorter side before the centre crop, over the crop size
_TRIES = 10  # torchvision's attempts at a box inside the image before the fallback


def crop_box(
  rng: np.random.Generator,
  width: int,
  height: int,
  area: tuple[float, float] = AREA,
  aspect: tuple[float, float] = ASPECT,
) -> tuple[int, int, int, int]:
  """RandomResizedCrop's box (left, top, right, bottom) in a width x height image.

  torchvision's `RandomResizedCrop.get_params` with a numpy Generator: up to
  10 draws of an area fraction (uniform) and an aspect ratio (log-uniform),
  the first that fits placed uniformly; else the whole image cropped to the
  nearest allowed aspect ratio, centred.
  """
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  for _ in range(_TRIES):
    target = width * height * rng.uniform(*area)
    ratio = math.exp(rng.uniform(*log_aspect))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  w, h = width, height
  if width / height < min(aspect):
    h = int(round(width / min(aspect)))
  elif width / height > max(aspect):
    w = int(round(height * max(aspect)))
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def train_image(
  image: Image.Image,
  rng: np.random.Generator,
  size: int,
  area: tuple[float, float] = AREA,
  aspect: tuple[float, float] = ASPECT,
) -> np.ndarray:
  """A random-resized crop of an RGB image, size x size, flipped left-right with probability 1/2."""
  box = crop_box(rng, *image.size, area, aspect)
  crop = image.crop(box).resize((size, size), Image.Resampling.BILINEAR)
  pixels = np.asarray(crop, np.uint8)
  return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def eval_image(image: Image.Image, size: int, resize_ratio: float = EVAL_RESIZE_RATIO):
  """The centre size x size crop of an RGB image whose shorter side is resized to
  round(size * resize_ratio) (the longer one in proportion, truncated, as torchvision does)."""
  width, height = image.size
  short = int(round(size * resize_ratio))
  if width <= height:
    new = (short, int(short * height / width))
  else:
    new = (int(short * width / height), short)
  if new != image.size:
    image = image.resize(new, Image.Resampling.BILINEAR)
  # torchvision's CenterCrop rounds the offsets (half to even, as Python's round).
  left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
  return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)
