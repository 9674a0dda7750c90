"""The device-side transforms: normalisation and the CIFAR-10 augmentation."""

import math

import jax
import numpy as np
import pytest

from bswap.data import augment as ip

MEAN, STD = np.array(ip.CIFAR10.mean), np.array(ip.CIFAR10.std)
WHITE = (1 - MEAN) / STD  # a normalised white pixel: positive in every channel
BLACK = (0 - MEAN) / STD


def test_normalize_matches_the_formula():
  x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  expected = (x / 255 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2023, 0.1994, 0.2010])
  for images in (x, jax.numpy.asarray(x)):
    out = ip.normalize(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_augment_is_a_deterministic_function_of_the_key():
  x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  out = ip.augment(jax.random.PRNGKey(0), x)
  assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, ip.augment(jax.random.PRNGKey(0), x))
  assert not np.array_equal(out, ip.augment(jax.random.PRNGKey(1), x))


def test_crop_moves_a_pixel_at_most_pad_or_drops_it():
  x = np.zeros((64, 8, 8, 3), np.uint8)
  x[:, 2, 5] = 255
  out = np.asarray(ip.random_crop(jax.random.PRNGKey(0), x, 4))
  assert out.shape == x.shape
  shifts = set()
  for image in out:
    ys, xs = np.nonzero(image[..., 0])
    assert len(ys) <= 1
    if len(ys):
      assert abs(ys[0] - 2) <= 4 and abs(xs[0] - 5) <= 4
      shifts.add((ys[0] - 2, xs[0] - 5))
  assert len(shifts) > 5 and len([i for i in out if not i.any()]) > 0


def test_crop_and_flip_give_a_possibly_mirrored_crop_of_the_zero_padded_image():
  x = np.random.default_rng(1).integers(1, 256, (32, 6, 6, 3), dtype=np.uint8)
  out = np.asarray(ip.augment(jax.random.PRNGKey(2), x, pad=2, cutout=0))
  padded = np.asarray(ip.normalize(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))))
  flips = []
  for i in range(32):
    crops = [padded[i, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
    match = (
      [np.allclose(out[i], c) for c in crops],
      [np.allclose(out[i], c[:, ::-1]) for c in crops],
    )
    assert any(match[0]) or any(match[1])
    flips.append(any(match[1]))
  assert 0 < sum(flips) < 32
  alone = np.asarray(ip.augment(jax.random.PRNGKey(3), x, pad=0, cutout=0))
  mirrored = [np.allclose(a, ip.normalize(b[:, ::-1])) for a, b in zip(alone, x)]
  assert all(m or np.allclose(a, ip.normalize(b)) for m, a, b in zip(mirrored, alone, x))
  assert 0 < sum(mirrored) < 32


def test_padding_is_black_before_normalisation():
  white = np.full((16, 8, 8, 3), 255, np.uint8)
  out = np.asarray(ip.augment(jax.random.PRNGKey(0), white, pad=4, cutout=0))
  is_white = np.isclose(out, WHITE, atol=1e-5).all(-1)
  is_black = np.isclose(out, BLACK, atol=1e-5).all(-1)
  assert (is_white | is_black).all() and is_black.any()


def test_cutout_zeroes_one_clipped_square_after_normalisation():
  white = np.full((64, 32, 32, 3), 255, np.uint8)
  out = np.asarray(ip.augment(jax.random.PRNGKey(0), white, pad=0, cutout=16))
  sizes = []
  for image in out:
    zero = image == 0
    assert (zero == zero[..., :1]).all()  # all channels at once
    rows, cols = np.nonzero(zero[..., 0].any(1))[0], np.nonzero(zero[..., 0].any(0))[0]
    assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
    assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))
    assert zero[..., 0].sum() == len(rows) * len(cols)  # a full rectangle
    assert len(rows) <= 16 and len(cols) <= 16
    np.testing.assert_allclose(
      image[~zero[..., 0]], np.broadcast_to(WHITE, (1024 - zero[..., 0].sum(), 3)), atol=1e-5
    )
    sizes.append(zero[..., 0].sum())
  assert 0 < min(sizes) < 256 and max(sizes) == 256


def test_normalize_uses_imagenet_mean_and_std():
  x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  out = ip.normalize(x, ip.IMAGENET)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, (x / 255 - mean) / std, rtol=1e-5, atol=1e-5)
  black = float(ip.normalize(np.zeros((1, 1, 1, 3), np.uint8), ip.IMAGENET)[0, 0, 0, 0])
  assert math.isclose(black, -0.485 / 0.229, rel_tol=1e-6)


def test_augment_takes_the_dataset_statistics():
  x = np.full((1, 2, 2, 3), 255, np.uint8)
  out = np.asarray(ip.normalize(x, ip.IMAGENET))
  expected = (1 - np.array(ip.IMAGENET.mean)) / np.array(ip.IMAGENET.std)
  np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)
  flipped = ip.augment(jax.random.PRNGKey(0), x, pad=0, cutout=0, stats=ip.IMAGENET)
  np.testing.assert_allclose(np.asarray(flipped), out, rtol=1e-6)


@pytest.mark.parametrize(
  'mean,std', [((0.5, 0.5), (0.2, 0.2, 0.2)), ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))]
)
def test_bad_statistics_are_a_clear_error(mean, std):
  with pytest.raises(ValueError, match=r'config.data.mean and config.data.std must be 3 numbers'):
    ip.Stats(mean, std)
