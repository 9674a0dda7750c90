"""The block menu: names, spellings, group counts and validity (SPEC section 3)."""

import pytest

from bswap.nets import menu

REFERENCE_ORDER = [
  'Conv',
  'DConvA2',
  'DConvA4',
  'DConvA8',
  'DConvA16',
  'DConvG16',
  'DConvG8',
  'DConvG4',
  'DConvG2',
  'DConv',
  'ConvB2',
  'ConvB4',
  'A2B2',
  'A4B2',
  'A8B2',
  'A16B2',
  'G16B2',
  'G8B2',
  'G8B4',
  'G4B2',
  'G2B2',
  'G4B4',
  'G2B4',
]


def test_menu_has_23_types_in_reference_order():
  assert list(menu.NAMES) == REFERENCE_ORDER


@pytest.mark.parametrize(
  'paper,reference',
  [
    ('S', 'Conv'),
    ('G(4)', 'DConvA4'),
    ('G(N/16)', 'DConvG16'),
    ('G(N)', 'DConv'),
    ('B(2)', 'ConvB2'),
    ('BG(2,16)', 'A16B2'),
    ('BG(2, M/16)', 'G16B2'),
    ('bg(4,m/8)', 'G8B4'),
    ('BG(4,M/2)', 'G2B4'),
    (' dconva2 ', 'DConvA2'),
  ],
)
def test_both_spellings_parse(paper, reference):
  assert menu.canonical_name(paper) == reference
  assert menu.canonical_name(reference) == reference


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown block type 'G\(3\)'.*DConvA4 \(G\(4\)\)"):
    menu.canonical_name('G(3)')


@pytest.mark.parametrize(
  'name,channels,groups',
  [
    ('Conv', 32, 1),
    ('DConvA8', 64, 8),
    ('DConvG16', 32, 2),
    ('DConvG2', 128, 64),
    ('DConv', 64, 64),
    ('G16B2', 64, 4),
    ('A4B2', 8, 4),
    ('G2B4', 32, 16),
  ],
)
def test_group_counts(name, channels, groups):
  assert menu.get(name).groups(channels) == groups


def test_g_n16_equals_g2_at_width_32_but_names_stay_distinct():
  assert menu.get('DConvG16').groups(32) == menu.get('DConvA2').groups(32)
  assert menu.canonical_name('G(N/16)') != menu.canonical_name('G(2)')


def test_invalid_at_width_one_stage_one_matches_spec():
  # WRN-*-1 stage 1: 16 -> 16 channels, M = 8 (b = 2) or 4 (b = 4).
  invalid = {t.name for t in menu.MENU if t.invalid_reason(16, 16)}
  assert invalid == {'A16B2', 'G16B2', 'G8B4'}
  assert all(t.invalid_reason(32, 32) is None for t in menu.MENU)


@pytest.mark.parametrize(
  'text,expected',
  [
    ('Conv,DConvA2', ['Conv', 'DConvA2']),
    ('S, BG(2,4),G(N/2)', ['S', 'BG(2,4)', 'G(N/2)']),
    ('BG(4,M/8)', ['BG(4,M/8)']),
  ],
)
def test_split_names_outside_parentheses(text, expected):
  assert menu.split_names(text) == expected


@pytest.mark.parametrize('text', ['Conv,,Conv', 'BG(2,4', 'Conv,'])
def test_split_names_rejects_malformed_lists(text):
  with pytest.raises(ValueError):
    menu.split_names(text)
