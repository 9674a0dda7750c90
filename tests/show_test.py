"""`python -m bswap.show` on its three input forms, and its errors."""

import json
import subprocess
import sys

import pytest

from bswap import files
from bswap import show
from bswap.nets import genotype as genotype_lib
from bswap.search import record as record_lib

NAMES16 = ['Conv', 'DConvA2', 'G8B4', 'DConv', 'ConvB2', 'A16B2']


def run(capsys, *argv):
  code = show.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_list_of_names_defaults_to_wrn_40_2(capsys):
  code, out, _ = run(capsys, ','.join(['S'] * 18), '--json')
  rep = json.loads(out)
  assert code == 0
  assert (rep['params'], rep['macs']) == (2_243_546, 327_599_360)
  assert len(rep['blocks']) == 18
  assert rep['genotype'] == {'arch': 'wrn', 'depth': 40, 'width': 2, 'blocks': ['Conv'] * 18}
  assert (
    sum(b['params'] for b in rep['blocks']) + rep['stem']['params'] + rep['head']['params']
    == rep['params']
  )


def test_json_file_nested_and_plain(capsys, tmp_path):
  geno = genotype_lib.Genotype(tuple(NAMES16), 'wrn', 16, 2)
  plain = tmp_path / 'g.json'
  files.write(plain, genotype_lib.dumps_json(geno))
  nested = tmp_path / 'best_genotype.json'
  nested.write_text(json.dumps({'genotype': geno.to_dict(), 'score': 1.0}))
  reports = [json.loads(run(capsys, str(p), '--json')[1]) for p in (plain, nested)]
  assert reports[0] == reports[1]
  assert [b['type'] for b in reports[0]['blocks']] == NAMES16
  assert reports[0]['blocks'][2]['paper'] == 'BG(4,M/8)'


def test_reference_csv_and_table_output(capsys, tmp_path):
  path = tmp_path / 'g.csv'
  files.write(
    path, genotype_lib.dumps_reference_csv(genotype_lib.Genotype(tuple(NAMES16), 'wrn', 16, 2))
  )
  code, out, _ = run(capsys, str(path))
  assert code == 0
  lines = out.splitlines()
  assert lines[0] == 'WRN-16-2 at 32x32'
  assert 'BG(4,M/8)' in out and 'G8B4' in out
  assert lines[-1].split()[0] == 'total'
  rep = json.loads(run(capsys, str(path), '--json')[1])
  assert lines[-1].split()[1] == f'{rep["params"]:,}'


@pytest.mark.parametrize(
  'argv,error',
  [
    (['Conv,Bogus,Conv', '--depth', '10'], "unknown block type 'Bogus'"),
    (['Conv,Conv'], 'got 2'),
    (['Conv,Conv,Conv', '--arch', 'resnet34'], 'ResNet-34 has 16 blocks'),
    (['missing.json'], 'does not exist'),
  ],
)
def test_errors_exit_2_with_a_message(capsys, argv, error):
  code, out, err = run(capsys, *argv)
  assert code == 2 and out == ''
  assert error in err


def test_conflicting_flag_is_an_error(capsys, tmp_path):
  path = tmp_path / 'g.json'
  files.write(path, genotype_lib.dumps_json(genotype_lib.Genotype(tuple(NAMES16), 'wrn', 16, 2)))
  code, _, err = run(capsys, str(path), '--width', '4')
  assert code == 2 and 'width=2 but width=4' in err


def test_runs_as_a_module():
  result = subprocess.run(
    [sys.executable, '-m', 'bswap.show', 'S,G(N),BG(2,M/4)', '--depth', '10', '--json'],
    capture_output=True,
    text=True,
    check=True,
  )
  rep = json.loads(result.stdout)
  assert [b['type'] for b in rep['blocks']] == ['Conv', 'DConv', 'G4B2']
  assert isinstance(rep['params'], int) and isinstance(rep['macs'], int)


def test_search_output_is_counted_at_its_recorded_resolution(capsys, tmp_path):
  path = tmp_path / 'best_genotype.json'
  geno = genotype_lib.Genotype(tuple(NAMES16), 'wrn', 16, 2)
  settings = {'metric': 'fisher_potential', 'data': {'image_size': 8}}
  record = record_lib.SearchRecord(geno, 1, 1, 1.0, (1.0,) * 6, 0, 0.5, settings)
  path.write_text(record.to_json())
  rep = json.loads(run(capsys, str(path), '--json')[1])
  assert rep['image_size'] == 8
  assert json.loads(run(capsys, str(path), '--json', '--image-size', '32')[1])['macs'] > rep['macs']
