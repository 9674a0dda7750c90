"""The pictures: search.png and curves.png are PNGs of the figure's size, labelled as asked."""

import io

import numpy as np
import pytest
from PIL import Image

from bswap import plots
from bswap.nets import accounting
from bswap.nets import genotype as genotype_lib
from bswap.search import record

BLOCKS = [('Conv', 'DConv', 'G4B2'), ('DConvA2', 'Conv', 'ConvB2'), ('G2B2', 'DConv', 'DConv')]


def _ranked(scores=(3.0, 2.0, 1.0)):
  ranked = []
  for i, (blocks, score) in enumerate(zip(BLOCKS, scores)):
    geno = genotype_lib.Genotype(blocks, 'wrn', 10, 2)
    count = accounting.count(geno, 8)
    ranked.append(record.Scored(i, geno, count.params, count.macs, score, (score / 3,) * 3))
  return ranked


def _image(png: bytes) -> Image.Image:
  image = Image.open(io.BytesIO(png))
  image.load()
  return image


def _pixels(png: bytes) -> np.ndarray:
  return np.asarray(_image(png).convert('RGB'))


def test_search_figure_is_a_png_of_its_figure_size():
  image = _image(plots.search_figure(_ranked(), 50_000, 0.025, 'Fisher potential'))
  assert image.format == 'PNG'
  assert image.size == (round(13 * 110), round(4.8 * 110))  # figsize x dpi
  assert 'Software' not in image.info  # no version stamp: same data, same bytes


def test_search_figure_is_the_same_bytes_for_the_same_data():
  args = (_ranked(), 50_000, 0.025, 'Fisher potential')
  assert plots.search_figure(*args) == plots.search_figure(*args)


def test_the_search_figure_labels_its_axes_with_the_metric():
  a = _pixels(plots.search_figure(_ranked(), 50_000, 0.025, 'Fisher potential'))
  b = _pixels(plots.search_figure(_ranked(), 50_000, 0.025, 'synaptic flow'))
  assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.parametrize('scores', [(3.0, 2.0, 1.0), (0.5, -0.25, -2.0)])
def test_search_figure_draws_positive_and_negative_scores(scores):
  pixels = _pixels(plots.search_figure(_ranked(scores), 50_000, 0.025, 'score'))
  assert pixels.std() > 0  # not a blank canvas


def _records(epochs=3):
  return [
    {
      'epoch': e,
      'train_ce': 2 / e,
      'test_loss': 2.5 / e,
      'train_error': 80 / e,
      'test_error': 90 / e,
    }
    for e in range(1, epochs + 1)
  ]


def test_curves_figure_is_a_png_of_its_figure_size():
  image = _image(plots.curves_figure(_records()))
  assert image.format == 'PNG' and image.size == (11 * 100, round(4.2 * 100))


def test_curves_figure_changes_with_the_records():
  three, four = (_pixels(plots.curves_figure(_records(n))) for n in (3, 4))
  assert three.shape == four.shape and not np.array_equal(three, four)


def test_curves_figure_accepts_epochs_without_test_metrics():
  records = [{'epoch': 1, 'train_ce': 2.0, 'train_error': 80.0}]  # evaluation every 2 epochs
  assert _image(plots.curves_figure(records)).format == 'PNG'
