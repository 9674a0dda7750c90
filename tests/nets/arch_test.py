"""Skeletons: the block positions of WRN-depth-width and ResNet-34, their shapes, and errors."""

import dataclasses

import pytest

from bswap.nets import arch


@pytest.mark.parametrize(
  'size, kernel, stride, out',
  [(32, 3, 1, 32), (32, 3, 2, 16), (9, 3, 2, 5), (8, 1, 2, 4), (224, 7, 2, 112), (112, 3, 2, 56)],
)
def test_conv_out_size_pads_kernel_over_two_on_both_sides(size, kernel, stride, out):
  assert arch.conv_out_size(size, kernel, stride) == out


@pytest.mark.parametrize('depth, width', [(10, 1), (16, 2), (40, 2), (28, 10)])
def test_wrn_has_n_blocks_per_stage_widening_16k_32k_64k(depth, width):
  skel = arch.wrn_skeleton(depth, width, image_size=32)
  n = (depth - 4) // 6
  assert skel.num_blocks == 3 * n and skel.name == f'WRN-{depth}-{width}'
  assert [s.index for s in skel.slots] == list(range(3 * n))
  assert [s.stage for s in skel.slots] == [1] * n + [2] * n + [3] * n
  assert [s.out_ch for s in skel.slots] == [16 * width] * n + [32 * width] * n + [64 * width] * n
  # Stride 2 opens stages 2 and 3 only; each block reads what the previous one wrote.
  strides = [s.stride for s in skel.slots]
  assert strides == [1] * n + [2] + [1] * (n - 1) + [2] + [1] * (n - 1)
  assert skel.slots[0].in_ch == skel.stem_channels == 16
  for before, after in zip(skel.slots, skel.slots[1:]):
    assert (after.in_ch, after.in_size) == (before.out_ch, before.out_size)
  assert [skel.slots[k * n].in_size for k in range(3)] == [32, 32, 16]
  assert skel.slots[-1].out_size == 8 and skel.head_channels == 64 * width
  assert not skel.post_activation and not any(s.post_activation for s in skel.slots)
  assert (skel.stem_kernel, skel.stem_stride, skel.stem_pool) == (3, 1, False)


def test_resnet34_has_3_4_6_3_post_activation_blocks_after_a_pooling_stem():
  skel = arch.resnet34_skeleton(224, 1000)
  assert skel.num_blocks == 16 and skel.name == 'ResNet-34' and skel.post_activation
  assert [s.stage for s in skel.slots] == [1] * 3 + [2] * 4 + [3] * 6 + [4] * 3
  assert [s.out_ch for s in skel.slots] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
  assert all(s.post_activation for s in skel.slots)
  # 224 -> 112 (stem conv 7x7/2) -> 56 (max pool 3/2); stages at 56, 28, 14, 7 px.
  assert [s.in_size for s in skel.slots if s.index in (0, 3, 7, 13)] == [56, 56, 28, 14]
  assert skel.slots[-1].out_size == 7
  assert [s.index for s in skel.slots if s.stride == 2] == [3, 7, 13]
  assert (skel.stem_kernel, skel.stem_stride, skel.stem_pool) == (7, 2, True)
  assert (skel.depth, skel.width) == (arch.RESNET34_DEPTH, arch.RESNET34_WIDTH) == (34, 1)


def test_the_stem_and_head_follow_the_blocks_in_the_seed_contract():
  for skel in (arch.wrn_skeleton(16, 2), arch.resnet34_skeleton(64, 10)):
    assert (skel.stem_part, skel.head_part) == (skel.num_blocks, skel.num_blocks + 1)


def test_image_size_changes_resolutions_only():
  small, large = arch.wrn_skeleton(16, 2, image_size=8), arch.wrn_skeleton(16, 2, image_size=32)
  assert [s.in_size for s in small.slots] == [s.in_size // 4 for s in large.slots]
  same = lambda s: dataclasses.replace(s, in_size=0)
  assert [same(s) for s in small.slots] == [same(s) for s in large.slots]


def test_skeletons_are_cached_and_hashable():
  assert arch.wrn_skeleton(10, 1, 8) is arch.wrn_skeleton(10, 1, 8)
  assert arch.skeleton('wrn', 10, 1, 8, 10) is arch.wrn_skeleton(10, 1, 8, 10)
  assert len({arch.wrn_skeleton(10, 1), arch.wrn_skeleton(10, 1), arch.wrn_skeleton(10, 2)}) == 2
  with pytest.raises(dataclasses.FrozenInstanceError):
    arch.wrn_skeleton(10, 1).depth = 16


def test_skeleton_fills_in_each_familys_defaults():
  wrn = arch.skeleton()
  assert (wrn.arch, wrn.depth, wrn.width, wrn.image_size, wrn.num_classes) == (
    'wrn',
    40,
    2,
    32,
    10,
  )
  resnet = arch.skeleton('resnet34')
  assert (resnet.image_size, resnet.num_classes, resnet.num_blocks) == (224, 1000, 16)
  assert arch.skeleton('resnet34', 34, 1, 64, 10) is arch.resnet34_skeleton(64, 10)
  assert arch.default_depth_width('wrn') == (40, 2)
  assert arch.default_depth_width('resnet34') == (34, 1)


@pytest.mark.parametrize(
  'make, message',
  [
    (lambda: arch.wrn_skeleton(12, 2), r'depth must be 6n \+ 4 .*got 12'),
    (lambda: arch.wrn_skeleton(4, 2), r'depth must be 6n \+ 4 with n >= 1 .*got 4'),
    (lambda: arch.wrn_skeleton('16', 2), r"depth must be 6n \+ 4 .*got '16'"),
    (lambda: arch.wrn_skeleton(16, 0), 'width must be a positive integer; got 0'),
    (lambda: arch.wrn_skeleton(16, 2, image_size=3), 'image_size must be at least 4'),
    (lambda: arch.resnet34_skeleton(16), 'ResNet-34 needs images of at least 32 pixels; got 16'),
    (lambda: arch.skeleton('vgg'), "unknown arch 'vgg'; valid: wrn, resnet34"),
    (
      lambda: arch.skeleton('resnet34', depth=18),
      r'resnet34 has depth 34 and width 1; got depth=18.*--config\.model\.depth=34',
    ),
  ],
)
def test_impossible_networks_are_clear_errors(make, message):
  with pytest.raises(ValueError, match=message):
    make()


@pytest.mark.parametrize('blocks, depth', [(3, 10), (6, 16), (18, 40), (36, 76)])
def test_wrn_depth_for_blocks_inverts_the_block_count(blocks, depth):
  assert arch.wrn_depth_for_blocks(blocks) == depth
  assert arch.wrn_skeleton(depth, 1).num_blocks == blocks


@pytest.mark.parametrize('blocks', [0, 2, 16, 19])
def test_a_block_count_no_wrn_has_is_an_error(blocks):
  with pytest.raises(ValueError, match=f'18 for WRN-40.*got {blocks}'):
    arch.wrn_depth_for_blocks(blocks)
