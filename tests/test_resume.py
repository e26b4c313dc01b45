"""A killed or interrupted search loses no finished trial and retries the unfinished one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna

from jaxnas import search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_trial_of_a_dead_local_worker_is_requeued_with_its_parameters(tmp_path):
  study = optuna.create_study(storage=f'sqlite:///{tmp_path}/s.db', study_name='s')
  dead = subprocess.Popen(['true'])
  dead.wait()
  trial = study.ask()
  trial.suggest_int('num_layers_idx', 0, 2)
  trial.set_user_attr('worker', f'{socket.gethostname()}:{dead.pid}')
  alive = study.ask()
  alive.set_user_attr('worker', search.WORKER)  # This process: still running, left alone.
  search.requeue_dead_local_trials(study)
  states = {t.number: t.state for t in study.trials}
  assert states[trial.number] == optuna.trial.TrialState.FAIL
  assert states[alive.number] == optuna.trial.TrialState.RUNNING
  (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
  assert waiting.params == {} and waiting.system_attrs['fixed_params'] == trial.params
  assert waiting.user_attrs['retry_of'] == trial.number


def test_sigterm_stops_cleanly_and_a_rerun_retries_the_interrupted_trial(tmp_path):
  command = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
             '--workflow=compress', '--n_trials=2', f'--workdir={tmp_path}',
             f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']
  results = tmp_path / 'results.json'
  with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) as process:
    deadline = time.time() + 400
    while not (results.exists() and json.loads(results.read_text())['n_complete'] == 1):
      assert time.time() < deadline and process.poll() is None
      time.sleep(0.5)
    time.sleep(3)  # Inside the second trial.
    process.send_signal(signal.SIGTERM)
    start = time.time()
    _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130 and time.time() - start < 30
  assert 'run the same command again to resume' in stderr
  subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
  trials = json.loads(results.read_text())['trials']
  assert [t['state'] for t in trials] == ['COMPLETE', 'FAIL', 'COMPLETE']
  assert trials[2]['retry_of'] == 1 and trials[2]['params'] == trials[1]['params']
  assert trials[2]['resumed_from_step']['float'] > 0  # From its checkpoint, not from step 0.
  assert trials[0]['resumed_from_step']['float'] == 0
  assert not any((tmp_path / 'checkpoints').rglob('*.orbax-checkpoint*'))
  assert not list((tmp_path / 'checkpoints' / 'jaxnas').iterdir())  # Removed once complete.
