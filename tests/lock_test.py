"""One run per workdir (issue 12, case 3): a busy workdir is refused, a dead one taken over."""

import json
import os
import subprocess
import sys

import pytest

from bswap import lock

HOLD = """
import sys, time
from bswap import lock
with lock.locked(sys.argv[1]):
  print('locked', flush=True)
  time.sleep(120)
"""


def _holder(workdir):
  """A real second process holding the workdir's lock (its first line says when)."""
  proc = subprocess.Popen(
    [sys.executable, '-c', HOLD, str(workdir)], stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_at_once_naming_the_other(tmp_path):
  workdir = tmp_path / 'work'
  holder = _holder(workdir)
  try:
    command = [sys.executable, '-m', 'bswap.main', '--config=configs/cifar_200k.py:smoke']
    result = subprocess.run([*command, f'--workdir={workdir}'], capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {workdir} is in use by pid {holder.pid} on ')
    assert 'wait for it to end, or use another --workdir' in last
    assert 'Traceback' not in result.stderr and 'Sampled' not in result.stderr
    assert sorted(os.listdir(workdir)) == [lock.FILE]  # nothing of the refused run
  finally:
    holder.kill()
    holder.wait()
  # kill -9 left the lock behind: the next run takes it over.
  assert (workdir / lock.FILE).exists()
  with lock.locked(str(workdir)):
    assert json.loads((workdir / lock.FILE).read_text())['pid'] == os.getpid()
  assert not (workdir / lock.FILE).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path):
  path = tmp_path / lock.FILE
  info = lock.holder_info()
  path.write_text(json.dumps({**info, 'pid': _dead_pid(), 'start_time': None}))
  with lock.locked(str(tmp_path)):
    with pytest.raises(ValueError, match=rf'is in use by pid {os.getpid()} '):
      lock.acquire(str(tmp_path))  # this very process holds it: alive
  assert not path.exists()
  # A lock from another host cannot be checked: refused, saying how to remove it.
  path.write_text(json.dumps({**info, 'host': 'elsewhere'}))
  with pytest.raises(ValueError, match=rf'on elsewhere .*delete {path}'):
    lock.acquire(str(tmp_path))


def test_a_refused_run_leaves_no_workdir_it_created(tmp_path):
  with pytest.raises(RuntimeError), lock.locked(str(tmp_path / 'new')):
    raise RuntimeError('the stage failed')
  assert not (tmp_path / 'new').exists()
