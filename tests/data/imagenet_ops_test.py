"""ImageNet preprocessing: torchvision's crop boxes, centre crops and the normalisation."""

import numpy as np
import pytest
from PIL import Image

from bswap.data import imagenet_ops as pp


def _rngs(n):
  return [np.random.default_rng(i) for i in range(n)]


def test_crop_boxes_lie_inside_with_the_allowed_area_and_aspect():
  width, height = 500, 375
  areas, aspects = [], []
  for rng in _rngs(500):
    left, top, right, bottom = pp.crop_box(rng, width, height)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    areas.append(w * h / (width * height))
    aspects.append(w / h)
  # Rounding w and h to pixels moves the area and ratio by a pixel's worth at most.
  assert 0.08 * 0.95 <= min(areas) and max(areas) <= 1.0
  assert 0.75 * 0.95 <= min(aspects) and max(aspects) <= 4 / 3 * 1.05
  # Area fractions uniform over [0.08, 1] (mean 0.54; fits favour small boxes a little).
  assert 0.4 < np.mean(areas) < 0.56
  assert np.mean(np.log(aspects)) == pytest.approx(0, abs=0.05)  # log-uniform, symmetric


@pytest.mark.parametrize(
  'width, height, box',
  [
    (1000, 10, (493, 0, 506, 10)),  # too wide for any box: 10 x round(10 * 4/3)
    (10, 1000, (0, 493, 10, 506)),  # too tall: round(10 / (3/4)) = 13 rows
  ],
)
def test_crop_box_falls_back_to_the_centre_crop_at_the_nearest_aspect(width, height, box):
  assert pp.crop_box(np.random.default_rng(0), width, height) == box


def test_crop_box_of_fixed_area_and_aspect():
  rng = np.random.default_rng(0)
  # The whole area at aspect 2 never fits a square: the fallback crops it to aspect 2.
  assert pp.crop_box(rng, 4, 4, area=(1.0, 1.0), aspect=(2.0, 2.0)) == (0, 1, 4, 3)
  # The whole area at aspect 1 fits at once: the whole image.
  assert pp.crop_box(rng, 6, 6, area=(1.0, 1.0), aspect=(1.0, 1.0)) == (0, 0, 6, 6)


def test_train_image_is_a_resized_crop_flipped_half_the_time():
  pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  image = Image.fromarray(pixels)
  flipped = []
  for rng in _rngs(40):
    # The whole image at its own size: the output is the image, or its mirror.
    out = pp.train_image(image, rng, 8, area=(1.0, 1.0), aspect=(1.0, 1.0))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    flipped.append(np.array_equal(out, pixels[:, ::-1]))
    assert flipped[-1] or np.array_equal(out, pixels)
  assert 5 < sum(flipped) < 35
  small = pp.train_image(Image.fromarray(pixels), np.random.default_rng(3), 4)
  assert small.shape == (4, 4, 3)
  np.testing.assert_array_equal(small, pp.train_image(image, np.random.default_rng(3), 4))


def test_eval_image_is_the_centre_crop_of_the_resized_image():
  # Unique pixel values: the crop's position is exact. Shorter side round(4 * 1.5) = 6.
  pixels = np.arange(9 * 6 * 3, dtype=np.uint8).reshape(9, 6, 3)
  tall = Image.fromarray(pixels)  # 6 wide, 9 high: already the right size, no resize
  out = pp.eval_image(tall, 4, resize_ratio=1.5)
  # Offsets: left round(2 / 2) = 1, top round(5 / 2) = 2 (half to even, as torchvision).
  np.testing.assert_array_equal(out, pixels[2:6, 1:5])
  wide = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 0, 2)))  # 9 wide, 6 high
  np.testing.assert_array_equal(pp.eval_image(wide, 4, 1.5), pixels.transpose(1, 0, 2)[1:5, 2:6])


def test_eval_image_resizes_the_shorter_side_and_truncates_the_longer():
  sizes = []
  original = Image.Image.resize

  def spy(image, size, *args, **kwargs):
    sizes.append(size)
    return original(image, size, *args, **kwargs)

  image = Image.new('RGB', (500, 375), (10, 200, 30))
  try:
    Image.Image.resize = spy
    out = pp.eval_image(image, 224)
  finally:
    Image.Image.resize = original
  assert sizes == [(int(256 * 500 / 375), 256)] == [(341, 256)]
  assert out.shape == (224, 224, 3)
  assert (out == (10, 200, 30)).all()
  assert round(224 * pp.EVAL_RESIZE_RATIO) == 256
