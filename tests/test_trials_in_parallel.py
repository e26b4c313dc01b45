"""Trials side by side (--trials_in_parallel) on 4 host-platform CPU devices, in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from conftest import XLA_CACHE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(workdir, num_devices: int, *flags) -> list[str]:
  """The command and environment of a `compress` search on `num_devices` CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices} '
                                   '--xla_backend_optimization_level=0')
  command = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
             '--workflow=compress', f'--workdir={workdir}',
             f'--config.compilation_cache_dir={XLA_CACHE}', *flags]
  return command, env


def trials(workdir) -> list[dict]:
  return json.loads((workdir / 'results.json').read_text())['trials']


def float_checkpoints(workdir) -> dict:
  """{trial checkpoint directory: saved steps} of the float phases on disk."""
  saved = {}
  for path in (workdir / 'checkpoints').glob('jaxnas/*/float/*'):
    if path.name.isdigit():
      saved.setdefault(path.parent.parent.name, []).append(int(path.name))
  return saved


def test_side_by_side_trials_use_their_own_devices_and_match_sequential_ones(tmp_path):
  parallel, sequential = tmp_path / 'parallel', tmp_path / 'sequential'
  grid = ('--sampler=grid', '--n_trials=2')
  command, env = launch(parallel, 4, *grid, '--trials_in_parallel=2')
  subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  # One after the other, each trial on 2 devices too: the same program on the same mesh shape.
  command, env = launch(sequential, 2, *grid)
  subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

  side_by_side = trials(parallel)
  assert [t['state'] for t in side_by_side] == ['COMPLETE'] * 2
  # Each trial's trained weights lived on its own two devices, and the trials overlapped.
  assert sorted(tuple(t['devices']) for t in side_by_side) == [(0, 1), (2, 3)]
  study = optuna.load_study(study_name='jaxnas', storage=f'sqlite:///{parallel}/study.db')
  first, second = study.trials
  assert (first.datetime_start < second.datetime_complete
          and second.datetime_start < first.datetime_complete)
  one_after_the_other = {json.dumps(t['params'], sort_keys=True): t
                         for t in trials(sequential)}
  for trial in side_by_side:
    alone = one_after_the_other[json.dumps(trial['params'], sort_keys=True)]
    assert trial['value'] == alone['value']
    assert trial['train_losses'] == alone['train_losses']  # Bit for bit.


def test_side_by_side_trials_stop_with_checkpoints_and_resume_after_kill_9(tmp_path):
  command, env = launch(tmp_path, 4, '--n_trials=2', '--trials_in_parallel=2')

  def start_and_wait(ready) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    while not ready():
      if process.poll() is not None:
        raise AssertionError(process.stderr.read()[-3000:])
      assert time.time() < deadline
      time.sleep(0.1)
    return process

  # SIGTERM once both first trials have checkpoints: both stop, saving where they are.
  process = start_and_wait(lambda: len(float_checkpoints(tmp_path)) == 2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130, stderr[-2000:]
  assert 'run the same command again to resume' in stderr
  stopped = float_checkpoints(tmp_path)
  assert len(stopped) == 2 and all(max(steps) > 0 for steps in stopped.values())

  # kill -9 once both retries saved a later step than the stop did.
  process = start_and_wait(lambda: all(
      max(float_checkpoints(tmp_path).get(key, [0])) > max(steps)
      for key, steps in stopped.items()))
  process.kill()
  process.communicate()

  rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  finished = trials(tmp_path)
  complete = [t for t in finished if t['state'] == 'COMPLETE']
  assert len(complete) == 2  # Exactly --n_trials, none run twice.
  assert len({json.dumps(t['params'], sort_keys=True) for t in complete}) == 2
  # Both are retries of retries (after SIGTERM, then kill -9), resumed from checkpoints.
  assert all(t['retry_of'] >= 2 and t['resumed_from_step']['float'] > 0 for t in complete)
  assert not any(t['devices'] == [0, 1, 2, 3] for t in complete)


@pytest.mark.parametrize('value, message', [
    ('3', '--trials_in_parallel=3 does not divide the 4 cpu devices of this host into equal groups'),
    ('two', "--trials_in_parallel must be a positive count or auto, got 'two'"),
])
def test_bad_trials_in_parallel_is_one_error_line(tmp_path, value, message):
  command, env = launch(tmp_path, 4, f'--trials_in_parallel={value}')
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == f'error: {message}'
  assert not (tmp_path / 'study.db').exists()
