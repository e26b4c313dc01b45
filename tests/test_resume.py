"""A killed or interrupted search loses no finished trial and retries the unfinished one."""

import datetime
import functools
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest

from jaxnas import progress, runner, samplers, search, search_space, workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_trials_of_dead_workers_are_requeued_with_their_parameters(tmp_path):
  study = optuna.create_study(storage=f'sqlite:///{tmp_path}/s.db', study_name='s')
  dead = subprocess.Popen(['true'])
  dead.wait()
  trial = study.ask()
  trial.suggest_int('num_layers_idx', 0, 2)
  trial.set_user_attr('worker', f'{socket.gethostname()}:{dead.pid}')
  alive = study.ask()
  alive.set_user_attr('worker', workers.WORKER)  # This process: still running, left alone.
  nameless = study.ask()  # Its worker was killed before it could name itself.
  workers.requeue_dead_trials(study, grace_seconds=0)
  states = {t.number: t.state for t in study.trials}
  assert states[trial.number] == states[nameless.number] == optuna.trial.TrialState.FAIL
  assert states[alive.number] == optuna.trial.TrialState.RUNNING
  failed = {t['number']: t.get('failed') for t in search.trial_records(study)}
  assert failed[trial.number] == f'its worker ({socket.gethostname()}:{dead.pid}) died'
  assert failed[nameless.number] == 'its worker died before it started'
  retried, _ = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
  assert retried.params == {} and retried.system_attrs['fixed_params'] == trial.params
  assert retried.user_attrs['retry_of'] == trial.number


def test_a_trial_without_heartbeats_is_retried_and_its_record_says_why(tmp_path):
  study = workers.open_study(f'sqlite:///{tmp_path}/s.db', 's', None, heartbeat_seconds=1,
                             grace_seconds=1)
  trial = study.ask()
  trial.suggest_int('num_layers_idx', 0, 2)
  study._storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
  time.sleep(2)  # Then its worker hung.
  optuna.storages.fail_stale_trials(study)
  failed, retry = search.trial_records(study)
  assert failed['state'] == 'FAIL' and failed['failed'] == workers.STALE_REASON
  assert retry['state'] == 'WAITING' and retry['retry_of'] == failed['number']


def test_only_a_later_run_writes_the_results_of_a_dead_finisher(tmp_path, monkeypatch):
  study = optuna.create_study(storage=f'sqlite:///{tmp_path}/s.db', study_name='s')
  finisher = subprocess.Popen(['true'])
  finisher.wait()
  trial = study.ask()
  trial.set_user_attr('worker', f'{socket.gethostname()}:{finisher.pid}')
  study.tell(trial, 0.5)
  assert not workers.writes_final_results(study)  # This process ran beside the finisher.
  monkeypatch.setattr(workers, 'STARTED', datetime.datetime.now())
  assert workers.writes_final_results(study)  # A run started after the last trial finished.


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
  assert trials[1]['failed'] == 'interrupted'
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


def _objective(params: dict, index: int) -> float:
  """A fixed score of an architecture, for a sampler to learn from (no training here)."""
  digest = hashlib.sha256(f'{index}{json.dumps(params, sort_keys=True)}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') / 2**32


def _proposed_trials(storage: str, sampler: str, n_trials: int, interruptions) -> list[dict]:
  """The parameters of the complete trials of a search run to `n_trials`, its process
  restarted (a new Study object) at each of `interruptions`: (trial k, 'asked') leaves trial
  k unfinished, as a stopped run does, and (k, 'done') stops between trials."""
  space = search_space.validate_space(search_space.LAB_SPACE)
  suggest = functools.partial(search_space.suggest_architecture, space=space,
                              with_identity_choices=sampler != 'grid')
  directions = ('maximize', 'minimize') if sampler == 'nsga2' else ('maximize',)
  propose = functools.partial(samplers.proposal_sampler, sampler, 7, space)
  interruptions, asked_count = list(interruptions), 0
  while True:
    study = workers.open_study(storage, 'study', None, directions)  # A new process.
    with progress.bar(total=n_trials, disable=True) as bar:
      while (asked := workers.next_trial(study, n_trials, suggest, lambda: False, bar,
                                         grace_seconds=60, ask_lock=threading.Lock(),
                                         propose=propose)) is not None:
        trial, _ = asked
        if interruptions and interruptions[0] == (asked_count, 'asked'):
          interruptions.pop(0)
          workers.requeue(study, trial, 'interrupted')
          break
        study.tell(trial, [_objective(trial.params, i) for i in range(len(directions))])
        asked_count += 1
        if interruptions and interruptions[0] == (asked_count, 'done'):
          interruptions.pop(0)
          break
      else:
        return [t.params for t in workers.completed(study)]


@pytest.mark.parametrize('sampler, n_trials', [('grid', 12), ('random', 12), ('tpe', 16),
                                               ('nsga2', 55)])
def test_interrupted_searches_propose_the_trials_of_an_uninterrupted_one(tmp_path, sampler,
                                                                         n_trials):
  """TPE's model takes over after 10 trials, NSGA-II breeds after its first 50."""
  uninterrupted = _proposed_trials(f'sqlite:///{tmp_path}/a.db', sampler, n_trials, [])
  assert len(uninterrupted) == n_trials
  assert len({json.dumps(p, sort_keys=True) for p in uninterrupted}) == n_trials
  rng = random.Random(sampler)  # Two stops mid-trial and two between trials, at random.
  kinds = ['asked', 'done'] * 2
  rng.shuffle(kinds)
  interruptions = list(zip(sorted(rng.sample(range(1, n_trials - 1), 4)), kinds))
  interrupted = _proposed_trials(f'sqlite:///{tmp_path}/b.db', sampler, n_trials,
                                 interruptions)
  assert interrupted == uninterrupted, interruptions


def _timed_output(command) -> list[tuple[float, str]]:
  """Runs `command` to its end: each line of its output (standard output and error in the
  order written) with the seconds since the start."""
  start = time.monotonic()
  with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as process:
    lines = [(time.monotonic() - start, line.rstrip('\n')) for line in process.stdout]
  assert process.returncode == 0, '\n'.join(line for _, line in lines[-30:])
  return lines


def test_a_search_killed_at_a_random_moment_proposes_the_trials_of_an_uninterrupted_one(
    tmp_path):
  def command(workdir):
    return [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
            '--workflow=compress', '--n_trials=3', f'--workdir={workdir}',
            '--config.train.epochs=1', f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']
  output = _timed_output(command(tmp_path / 'uninterrupted'))
  check_progress_lines([line for _, line in output], 'compress/tpe', 3)
  # A moment from the start to the end of trial 1: the trials after it are proposed afresh.
  moment = random.uniform(0, next(t for t, line in output if line.startswith('trial 1:')))
  print(f'killed after {moment:.1f} s')  # Shown if the test fails.
  with subprocess.Popen(command(tmp_path / 'interrupted'), cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
    time.sleep(moment)
    process.kill()
  _timed_output(command(tmp_path / 'interrupted'))
  runs = [json.loads((tmp_path / name / 'results.json').read_text())['trials']
          for name in ('uninterrupted', 'interrupted')]
  assert [[t['params'] for t in trials if t['state'] == 'COMPLETE'] for trials in runs] == [
      [t['params'] for t in runs[0]]] * 2
  for t in runs[1]:
    if t['state'] == 'FAIL':
      assert t['failed'].startswith('its worker') and t['failed'].endswith('died')


def check_progress_lines(lines: list[str], study_bar: str, n_trials: int):
  """What a run off a terminal shows: what it loads first, what it will run before its
  progress bar starts, one time estimate per line (its own, not tqdm's as well), and the
  study's final count once."""
  assert lines[0].startswith('data: loading ')
  bar_lines = [i for i, line in enumerate(lines) if line.startswith(f'{study_bar}:')]
  announced = next(i for i, line in enumerate(lines) if line.startswith('study '))
  assert bar_lines and announced < bar_lines[0]
  assert not any('<' in lines[i] or lines[i].count(' left') > 1 for i in bar_lines)
  assert sum(f'{n_trials}/{n_trials}' in lines[i] for i in bar_lines) == 1


def test_a_trial_that_fails_says_why_and_a_rerun_tries_it_again(tmp_path, test_config):
  test_config.train.epochs = 1
  (tmp_path / 'checkpoints').write_text('')  # Where trials keep their checkpoints: they fail.
  spec = runner.RunSpec('compress', 'tpe', 1, str(tmp_path), '', 'test')
  with pytest.raises(OSError):
    runner.run(spec, test_config)
  (tmp_path / 'checkpoints').unlink()
  runner.run(spec, test_config)
  failed, complete = json.loads((tmp_path / 'results.json').read_text())['trials']
  assert failed['state'] == 'FAIL' and complete['state'] == 'COMPLETE'
  assert failed['failed'].startswith(('FileExistsError: ', 'NotADirectoryError: '))
  assert complete['params'] == failed['params']  # The same proposal: the study's first.
