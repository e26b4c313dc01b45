"""A killed or interrupted search loses no finished trial and retries the unfinished one."""

import datetime
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


def test_trials_of_dead_workers_are_requeued_with_their_parameters(tmp_path):
  study = optuna.create_study(storage=f'sqlite:///{tmp_path}/s.db', study_name='s')
  dead = subprocess.Popen(['true'])
  dead.wait()
  trial = study.ask()
  trial.suggest_int('num_layers_idx', 0, 2)
  trial.set_user_attr('worker', f'{socket.gethostname()}:{dead.pid}')
  alive = study.ask()
  alive.set_user_attr('worker', search.WORKER)  # This process: still running, left alone.
  nameless = study.ask()  # Its worker was killed before it could name itself.
  search.requeue_dead_trials(study, grace_seconds=0)
  states = {t.number: t.state for t in study.trials}
  assert states[trial.number] == states[nameless.number] == optuna.trial.TrialState.FAIL
  assert states[alive.number] == optuna.trial.TrialState.RUNNING
  retried, _ = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
  assert retried.params == {} and retried.system_attrs['fixed_params'] == trial.params
  assert retried.user_attrs['retry_of'] == trial.number


def test_only_a_later_run_writes_the_results_of_a_dead_finisher(tmp_path, monkeypatch):
  study = optuna.create_study(storage=f'sqlite:///{tmp_path}/s.db', study_name='s')
  finisher = subprocess.Popen(['true'])
  finisher.wait()
  trial = study.ask()
  trial.set_user_attr('worker', f'{socket.gethostname()}:{finisher.pid}')
  study.tell(trial, 0.5)
  assert not search.writes_final_results(study)  # This process ran beside the finisher.
  monkeypatch.setattr(search, 'STARTED', datetime.datetime.now())
  assert search.writes_final_results(study)  # A run started after the last trial finished.


def test_sigterm_stops_cleanly_and_a_rerun_retries_the_interrupted_trial(tmp_path):
  command = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
             '--workflow=compress', '--n_trials=2', f'--workdir={tmp_path}',
             '--config.train.epochs=3',  # 45 steps: time to stop one mid-way.
             f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']
  results = tmp_path / 'results.json'

  def second_trial_checkpointed():
    # The first trial's checkpoints are removed once it is complete.
    return (results.exists() and json.loads(results.read_text())['n_complete'] == 1
            and any(p.name.isdigit() for p in (tmp_path / 'checkpoints').glob('*/*/float/*')))

  with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) as process:
    deadline = time.time() + 400
    while not second_trial_checkpointed():
      assert time.time() < deadline and process.poll() is None
      time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    start = time.time()
    _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130 and time.time() - start < 30
  assert 'run the same command again to resume' in stderr
  rerun = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True,
                         timeout=600)
  # The work left, from the start (`compress` trials have no QAT).
  assert "study 'jaxnas': 1 trial(s) to run, 45 training steps each (45 float)" in rerun.stdout
  trials = json.loads(results.read_text())['trials']
  assert [t['state'] for t in trials] == ['COMPLETE', 'FAIL', 'COMPLETE']
  assert trials[2]['retry_of'] == 1 and trials[2]['params'] == trials[1]['params']
  assert trials[2]['resumed_from_step']['float'] > 0  # From its checkpoint, not from step 0.
  assert trials[0]['resumed_from_step']['float'] == 0
  assert not any((tmp_path / 'checkpoints').rglob('*.orbax-checkpoint*'))
  assert not list((tmp_path / 'checkpoints' / 'jaxnas').iterdir())  # Removed once complete.


class Search:
  """A launch.py search in a subprocess, killed with SIGKILL when `ready()` first holds."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.command = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
                    '--workflow=compress', '--n_trials=2', f'--workdir={workdir}',
                    f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']

  def kill_when(self, ready):
    with subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as process:
      os.set_blocking(process.stderr.fileno(), False)
      stderr, deadline = b'', time.time() + 400
      while not ready(stderr.decode(errors='replace')):
        assert time.time() < deadline and process.poll() is None, stderr[-2000:]
        stderr += process.stderr.read() or b''
        time.sleep(0.2)
      process.kill()

  def n_complete(self):
    results = self.workdir / 'results.json'
    return json.loads(results.read_text())['n_complete'] if results.exists() else 0

  def float_checkpoint_steps(self):
    return [int(p.name) for p in (self.workdir / 'checkpoints').glob('jaxnas/*/float/*')
            if p.name.isdigit()]


def test_kill_9_at_several_points_loses_no_finished_work(tmp_path):
  search = Search(tmp_path)
  search.kill_when(lambda _: search.float_checkpoint_steps())  # Mid-training.
  saved_steps = search.float_checkpoint_steps()
  # Compressing the resumed trial.
  search.kill_when(lambda stderr: 'validation int8' in stderr)
  search.kill_when(lambda _: search.n_complete() == 1)  # Between trials.
  subprocess.run(search.command, cwd=ROOT, check=True, capture_output=True, timeout=600)
  trials = json.loads((tmp_path / 'results.json').read_text())['trials']
  complete = [t for t in trials if t['state'] == 'COMPLETE']
  assert len(complete) == 2
  assert len({json.dumps(t['params'], sort_keys=True) for t in complete}) == 2
  first = complete[0]  # Trial 0, killed in training, then its retry in compression.
  assert (first['number'], first['retry_of'], trials[1]['retry_of']) == (2, 1, 0)
  assert trials[0]['params'] == trials[1]['params'] == first['params']
  assert first['resumed_from_step']['float'] >= max(saved_steps) > 0
