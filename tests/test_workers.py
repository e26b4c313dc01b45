"""Several workers on one study: a real PostgreSQL server, heartbeats of running trials."""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import optuna
import psycopg

from jaxnas import workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_trial_whose_heartbeat_stopped_is_retried_with_its_parameters(tmp_path):
  study = workers.open_study(f'sqlite:///{tmp_path}/s.db', 's', optuna.samplers.RandomSampler(),
                             heartbeat_seconds=1, grace_seconds=2)
  trial = study.ask()
  trial.suggest_int('num_layers_idx', 0, 2)
  trial.set_user_attr('worker', 'another-host:123')  # Not checkable by pid from here.
  with workers.Heartbeat(study, trial, interval=1):
    time.sleep(3)  # Beating: not stale.
  optuna.storages.fail_stale_trials(study)
  assert study.trials[0].state == optuna.trial.TrialState.RUNNING
  time.sleep(3)  # The worker "died": no heartbeat for longer than the grace period.
  optuna.storages.fail_stale_trials(study)
  optuna.storages.fail_stale_trials(study)  # A second worker checking too queues nothing more.
  failed, waiting = study.trials
  assert failed.state == optuna.trial.TrialState.FAIL
  assert waiting.state == optuna.trial.TrialState.WAITING
  assert waiting.system_attrs['fixed_params'] == failed.params
  assert waiting.user_attrs['retry_of'] == failed.number


def test_two_workers_share_one_postgres_study(tmp_path, postgres_url):
  command = [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
             '--workflow=compress', '--sampler=grid', '--n_trials=3', f'--workdir={tmp_path}',
             f'--storage={postgres_url}', '--study_name=two-workers',
             f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']
  workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
  outputs = [worker.communicate(timeout=900) for worker in workers]
  for worker, (_, stderr) in zip(workers, outputs):
    assert worker.returncode == 0, stderr[-3000:]
  study = optuna.load_study(study_name='two-workers', storage=postgres_url)
  complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
  assert len(complete) == 3
  assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 3  # Grid points.
  assert len({t.user_attrs['worker'] for t in complete}) == 2  # Both did work.
  assert sum('figures:' in stdout for stdout, _ in outputs) == 1  # One process writes figures.
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['n_complete'] == 3 and results['best']['number'] in {t.number for t in complete}
  assert (tmp_path / 'best_model' / 'two-workers' / 'model.json').exists()


def test_workers_starting_together_on_a_new_database(postgres_url):
  server, _ = postgres_url.rsplit('/', 1)
  with psycopg.connect(f'{server}/jaxnas', autocommit=True) as connection:
    connection.execute('CREATE DATABASE race')
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    studies = list(pool.map(lambda _: workers.open_study(f'{server}/race', 'race', None),
                            range(4)))
  assert len({study._study_id for study in studies}) == 1  # pylint: disable=protected-access
