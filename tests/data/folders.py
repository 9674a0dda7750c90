"""A tiny class-folder dataset of assorted sizes and modes, shared by the data tests.

3 classes x 4 train images (JPEG and PNG; RGB, gray, RGBA, one CMYK) and 5
validation images, written by `make_tree`; tests/data/conftest.py writes it
once per session (the `tree` fixture).
"""

import numpy as np
from PIL import Image

# (file, width, height, mode): sizes differ, and so do modes (gray, RGBA, CMYK).
TRAIN_IMAGES = [
  ('a.jpg', 40, 60, 'RGB'),
  ('b.png', 75, 50, 'RGB'),
  ('c.jpg', 30, 30, 'L'),
  ('d.png', 50, 40, 'RGBA'),
]
VAL_COUNTS = {'zebra': 2, 'ant': 2, 'mole': 1}  # written unsorted
KNOWN = 'val/ant/0.png'  # 24 x 36, lossless: its centre crop is checked pixel by pixel


def write_image(path, width, height, mode, seed):
  """A random image of `mode` at `path`; returns its pixels as RGB."""
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
  image = Image.fromarray(pixels, 'RGBA').convert(mode)
  image.save(path)
  return np.asarray(image.convert('RGB'))


def make_tree(root):
  seed = 0
  for name in VAL_COUNTS:
    for file, width, height, mode in TRAIN_IMAGES:
      mode = 'CMYK' if (name, file) == ('mole', 'c.jpg') else mode
      write_image(root / 'train' / name / file, width, height, mode, seed := seed + 1)
  for name, count in VAL_COUNTS.items():
    for i in range(count):
      write_image(root / 'val' / name / f'{i}.png', 24, 36, 'RGB', seed := seed + 1)
  (root / 'train' / 'ant' / '.DS_Store').write_bytes(b'not an image')  # hidden: skipped
  return root
