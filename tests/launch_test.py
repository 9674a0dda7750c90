"""launch/tpu_pod.sh --dry-run, and the detached job helper launch/tpu_job.sh run for real."""

import os
import pathlib
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
POD = ROOT / 'launch' / 'tpu_pod.sh'
JOB = ROOT / 'launch' / 'tpu_job.sh'

pytestmark = pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')


def pod(*args, **env):
  environ = {**os.environ, 'NAME': 'test-pod', 'WORKDIR': 'gs://bucket/run', **env}
  result = subprocess.run(
    ['bash', str(POD), '--dry-run', *args], capture_output=True, text=True, env=environ
  )
  return result.returncode, result.stdout + result.stderr


def _commands(output):
  return [line for line in output.splitlines() if line.startswith('+ ')]


def test_dry_run_installs_python_311_starts_detached_and_deletes_the_vm_it_created():
  code, out = pod('--', '--config.train.epochs=1')
  assert code == 0, out
  commands = _commands(out)
  create = next(i for i, c in enumerate(commands) if 'tpu-vm create test-pod' in c)
  install = next(i for i, c in enumerate(commands) if 'uv venv' in c)
  start = next(i for i, c in enumerate(commands) if 'setsid nohup' in c)
  delete = next(i for i, c in enumerate(commands) if 'tpu-vm delete test-pod' in c)
  assert create < install < start < delete == len(commands) - 1
  assert '--python 3.11 ~/bswap-venv' in commands[install]
  assert 'jax[tpu]' in commands[install] and 'gcsfs -e ~/bswap' in commands[install]
  run = commands[start]
  assert '~/bswap-venv/bin/python -m bswap.main' in run  # not the system python3
  assert '--config.distributed=true' in run and '--config.train.epochs=1' in run
  assert '> ~/bswap-job/job.log 2>&1 < /dev/null &' in run  # detached, a log per worker
  assert 'BSWAP_LOG_URL=gs://bucket/run/logs/$(hostname).log' in run
  assert not any('python3 -m pip' in c for c in commands)


def test_a_reused_vm_is_never_deleted():
  for flags in (['--no-create'], ['--no-create', '--detach'], ['--keep'], ['--detach']):
    code, out = pod(*flags)
    assert code == 0, out
    assert not any('tpu-vm delete' in c for c in _commands(out)), flags
    assert 'Keeping TPU VM test-pod' in out or 'Delete it when done' in out
  code, out = pod('--no-create')
  assert any('tpu-vm describe test-pod' in c for c in _commands(out))
  assert not any('tpu-vm create' in c for c in _commands(out))


def test_a_local_genotype_goes_to_the_workdir_on_gcs(tmp_path):
  geno = tmp_path / 'best.json'
  geno.write_text('{}')
  code, out = pod(f'--genotype={geno}')
  assert code == 0, out
  assert f'+ gcloud storage cp {geno} gs://bucket/run/input_genotype.json' in out
  assert '--config.train.genotype=gs://bucket/run/input_genotype.json' in out
  code, out = pod('--genotype=gs://other/g.csv')
  assert '--config.train.genotype=gs://other/g.csv' in out and 'storage cp' not in out


def test_status_logs_stop_and_bad_input():
  assert 'tpu_job.sh status ~/bswap-job' in pod('--status')[1]
  assert (
    "'--command=tail -n 20 -F ~/bswap-job/job.log'"
    in pod('--logs', '--worker=2', '--lines=20', '--follow')[1]
  )
  assert '--worker=2' in pod('--logs', '--worker=2')[1]
  assert 'tpu_job.sh stop' in pod('--stop')[1]
  code, out = pod(WORKDIR='/tmp/run')
  assert code == 2 and 'not a gs:// path' in out and 'tpu-vm create' not in out
  code, out = pod('--bogus')
  assert code == 2 and 'unknown option --bogus' in out


def _job(*args, cwd):
  return subprocess.run(['bash', str(JOB), *args], capture_output=True, text=True, cwd=cwd)


def _wait_for(path, seconds=20.0):
  end = time.monotonic() + seconds
  while not path.exists() and time.monotonic() < end:
    time.sleep(0.05)
  assert path.exists(), f'{path} never appeared'


def test_the_job_runs_detached_records_its_exit_code_and_can_be_stopped(tmp_path):
  job = tmp_path / 'job'
  job.mkdir()
  # As tpu_pod.sh starts it: setsid nohup, output in job.log; this shell then exits.
  script = f'setsid nohup bash {JOB} run {job} sh -c "echo hello; exit 3" > {job}/job.log 2>&1 &'
  subprocess.run(['bash', '-c', script], check=True)
  _wait_for(job / 'exit_code')
  assert (job / 'exit_code').read_text().strip() == '3'
  status = _job('status', str(job), cwd=tmp_path).stdout
  assert 'finished, exit code 3' in status and '[tpu_job]' in status
  assert 'hello' in (job / 'job.log').read_text()
  assert _job('running', str(job), cwd=tmp_path).returncode != 0

  script = f'setsid nohup bash {JOB} run {job} sleep 60 > {job}/job.log 2>&1 &'
  subprocess.run(['bash', '-c', script], check=True)
  _wait_for(job / 'pid')
  for _ in range(100):  # until the new run has cleared the old exit code
    if _job('running', str(job), cwd=tmp_path).returncode == 0:
      break
    time.sleep(0.05)
  assert ': running (pid' in _job('status', str(job), cwd=tmp_path).stdout
  assert 'stopped the job' in _job('stop', str(job), cwd=tmp_path).stdout
  for _ in range(100):
    if _job('running', str(job), cwd=tmp_path).returncode != 0:
      break
    time.sleep(0.05)
  assert _job('running', str(job), cwd=tmp_path).returncode != 0
  assert 'no job' in _job('status', str(tmp_path / 'none'), cwd=tmp_path).stdout
