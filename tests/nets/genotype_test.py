"""Genotypes: validation, JSON and reference-CSV formats, clear errors."""

import json

import pytest

from bswap import files
from bswap.nets import genotype as genotype_lib

MIXED = ('Conv', 'DConvA2', 'G8B4', 'DConv', 'ConvB2', 'A16B2')  # WRN-16


def test_paper_names_are_stored_as_reference_names():
  geno = genotype_lib.Genotype(('S', 'G(2)', 'BG(4,M/8)', 'G(N)', 'B(2)', 'BG(2,16)'), 'wrn', 16, 2)
  assert geno.blocks == MIXED
  assert geno.paper_names == ('S', 'G(2)', 'BG(4,M/8)', 'G(N)', 'B(2)', 'BG(2,16)')


def test_genotype_is_immutable_and_hashable():
  geno = genotype_lib.Genotype(MIXED, 'wrn', 16, 2)
  with pytest.raises(AttributeError):
    geno.depth = 40
  assert {geno: 1}[genotype_lib.Genotype(list(MIXED), 'wrn', 16, 2)] == 1


def test_json_round_trip(tmp_path):
  geno = genotype_lib.Genotype(MIXED, 'wrn', 16, 2)
  path = tmp_path / 'g.json'
  files.write(path, genotype_lib.dumps_json(geno))
  assert json.loads(path.read_text()) == {
    'arch': 'wrn',
    'depth': 16,
    'width': 2,
    'blocks': list(MIXED),
  }
  assert genotype_lib.load(path) == geno


def test_json_nested_under_genotype_key(tmp_path):
  path = tmp_path / 'best.json'
  path.write_text(
    json.dumps(
      {
        'genotype': {'arch': 'wrn', 'depth': 16, 'width': 2, 'blocks': list(MIXED)},
        'params': 1,
        'score': 0.5,
      }
    )
  )
  assert genotype_lib.load(path).blocks == MIXED


def test_reference_csv_round_trip(tmp_path):
  geno = genotype_lib.uniform('G4B2', 40, 2)
  path = tmp_path / 'g.csv'
  files.write(path, genotype_lib.dumps_reference_csv(geno, 1.25))
  lines = path.read_text().splitlines()
  assert lines[0] == ',index,convs,fisher'
  assert lines[1].startswith("0,0,\"['G4B2', 'G4B2',") and lines[1].endswith('",1.25')
  assert genotype_lib.load(path) == geno


def test_reference_csv_as_published_parses(tmp_path):
  # As the reference writes it with pandas, including a row with missing spaces.
  names = ['Conv', 'DConvA2', 'G8B4', 'A4B2', 'DConv', 'ConvB4'] * 3
  literal = repr(names).replace(", 'G8B4'", ",'G8B4'")
  path = tmp_path / 'published.csv'
  path.write_text(f',index,convs,fisher\n0,0,"{literal}",0.00123\n1,5,"{literal}",0.0001\n')
  geno = genotype_lib.load(path)
  assert geno.blocks == tuple(names)
  assert (geno.arch, geno.depth, geno.width) == ('wrn', 40, 2)
  assert genotype_lib.load(path, width=4).width == 4


def test_parse_list_of_names_defaults_to_wrn_40_2():
  geno = genotype_lib.parse(','.join(['BG(2,M/4)'] * 18))
  assert (geno.depth, geno.width, geno.blocks[0]) == (40, 2, 'G4B2')


@pytest.mark.parametrize(
  'blocks,error',
  [
    (('Conv',) * 5, 'WRN-16-2 has 6 blocks but the genotype names 5'),
    (('Conv',) * 5 + ('Bogus',), "unknown block type 'Bogus'; valid types: Conv"),
  ],
)
def test_bad_genotypes_are_clear_errors(blocks, error):
  with pytest.raises(ValueError, match=error):
    genotype_lib.Genotype(blocks, 'wrn', 16, 2)


def test_invalid_type_at_a_position_names_it():
  with pytest.raises(
    ValueError,
    match=r'G16B2 is invalid at position 1 \(stage 1, 16 -> 16 '
    r'channels\).*group count at width 8 is 0.*Valid types there: Conv',
  ):
    genotype_lib.Genotype(('Conv', 'G16B2') + ('Conv',) * 4, 'wrn', 16, 1)


@pytest.mark.parametrize(
  'content,error',
  [
    ('{"blocks": ["Conv",', 'malformed JSON'),
    ('{"arch": "wrn"}', 'no "blocks" list'),
    ('{"blocks": "Conv"}', '"blocks" must be a list'),
    ('{"blocks": ["Conv", "Conv", "Conv"], "depth": "ten"}', '"depth" must be an integer'),
    ('[1, 2]', 'expected a JSON object'),
    ('{"blocks": ["Conv", "Conv", "Conv"], "arch": "vgg"}', "unknown arch 'vgg'"),
    ('{"blocks": ["Conv"], "arch": "resnet34"}', 'ResNet-34 has 16 blocks'),
    ('{"blocks": ["Conv"], "arch": "vgg"}', 'unknown arch'),
  ],
)
def test_malformed_json_files(tmp_path, content, error):
  path = tmp_path / 'bad.json'
  path.write_text(content)
  with pytest.raises(ValueError, match=error):
    genotype_lib.load(path)


@pytest.mark.parametrize(
  'content,error',
  [
    ('a,b\n1,2\n', 'not a reference genotype CSV'),
    (',index,convs,fisher\n', 'not a reference genotype CSV'),
    (',index,convs,fisher\n0,0,"[Conv, DConv",0\n', 'not a Python list literal'),
    (',index,convs,fisher\n0,0,"{1: 2}",0\n', 'must be a list of block-type names'),
  ],
)
def test_malformed_csv_files(tmp_path, content, error):
  path = tmp_path / 'bad.csv'
  path.write_text(content)
  with pytest.raises(ValueError, match=error):
    genotype_lib.load(path)


def test_missing_file_and_conflicting_flags(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    genotype_lib.load(tmp_path / 'nope.json')
  path = tmp_path / 'g.json'
  files.write(path, genotype_lib.dumps_json(genotype_lib.Genotype(MIXED, 'wrn', 16, 2)))
  with pytest.raises(ValueError, match='says depth=16 but depth=40 was given'):
    genotype_lib.load(path, depth=40)
  assert genotype_lib.load(path, depth=16).depth == 16


def test_resnet34_genotypes_in_every_format(tmp_path):
  names = ['Conv', 'DConvA2', 'G8B4', 'DConv'] * 4
  geno = genotype_lib.Genotype(tuple(names), 'resnet34')
  assert (geno.depth, geno.width) == (34, 1)
  assert geno.to_dict() == {'arch': 'resnet34', 'depth': 34, 'width': 1, 'blocks': names}
  files.write(tmp_path / 'g.json', genotype_lib.dumps_json(geno))
  assert genotype_lib.load(tmp_path / 'g.json') == geno
  # A reference CSV stores names only: 16 of them make a ResNet-34.
  files.write(tmp_path / 'g.csv', genotype_lib.dumps_reference_csv(geno))
  assert genotype_lib.load(tmp_path / 'g.csv') == geno
  assert genotype_lib.parse(','.join(names)) == geno
  assert genotype_lib.uniform('Conv', arch='resnet34').blocks == ('Conv',) * 16
  with pytest.raises(ValueError, match='WRN-40-2 has 18 blocks'):
    genotype_lib.parse(','.join(names), arch='wrn', depth=40)


class _FakeBucket:
  """etils.epath for gs:// paths, over a dict: what a TPU worker reads the search's file through."""

  objects = {}

  def __init__(self, path):
    self.path = path

  def exists(self):
    return self.path in self.objects

  def read_text(self):
    return self.objects[self.path]


def test_a_genotype_file_on_gcs_is_read_through_bswap_files(monkeypatch):
  geno = genotype_lib.Genotype(MIXED, 'wrn', 16, 2)
  url = 'gs://bucket/cifar_400k/best_genotype.json'
  monkeypatch.setattr(_FakeBucket, 'objects', {url: genotype_lib.dumps_json(geno)})
  monkeypatch.setattr(files, '_path', lambda path: _FakeBucket(str(path)))
  assert genotype_lib.load(url) == geno
  assert genotype_lib.parse(url) == geno  # --config.train.genotype=gs://...
  with pytest.raises(ValueError, match='does not exist'):
    genotype_lib.load('gs://bucket/missing.json')
