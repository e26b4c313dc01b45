"""Optuna studies over the search space: samplers, storage, the trial loop and results.json.

A study lives in its Optuna storage (an SQLite file in the workdir by default, or any RDB
URL), so rerunning the same command continues it until `n_trials` trials are complete.
"""

import hashlib
import json
import math
import os
import shutil
import socket
from typing import Callable

import optuna
from tqdm import tqdm

from jaxnas import checkpoints, search_space, workflows
from jaxnas.errors import UserError

SAMPLERS = ('grid', 'random', 'tpe')
COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
FAIL = optuna.trial.TrialState.FAIL
WORKER = f'{socket.gethostname()}:{os.getpid()}'


def make_sampler(name: str, seed: int, space: dict) -> optuna.samplers.BaseSampler:
  if name == 'grid':
    return optuna.samplers.GridSampler(search_space.grid_search_space(space), seed=seed)
  if name == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  if name == 'tpe':
    return optuna.samplers.TPESampler(seed=seed)
  raise UserError(f'unknown sampler {name!r}; use one of {", ".join(SAMPLERS)}')


def default_storage(workdir: str) -> str:
  return f'sqlite:///{os.path.abspath(os.path.join(workdir, "study.db"))}'


def open_study(storage: str, study_name: str, sampler) -> optuna.Study:
  """Creates the study or loads it to continue; a bad or unreachable URL is a UserError."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  try:
    return optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                               direction='maximize', load_if_exists=True)
  except Exception as e:  # SQLAlchemy raises many types for bad URLs and dead servers.
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(f'cannot open study {study_name!r} in storage {storage!r}: {message}') from e


def completed(study: optuna.Study) -> list:
  return study.get_trials(deepcopy=False, states=(COMPLETE,))


def run_study(exp: workflows.Experiment, workflow: str, sampler_name: str, n_trials: int,
              storage: str, study_name: str, workdir: str,
              on_trial_done: Callable[[optuna.Study], None]) -> optuna.Study:
  """Runs trials until `n_trials` are complete in total (a rerun continues the study)."""
  space = search_space.validate_space(exp.config.search.space)
  if sampler_name == 'grid' and n_trials > search_space.grid_size(space):
    raise UserError(f'the grid has {search_space.grid_size(space)} points; '
                    f'--n_trials={n_trials} is more')
  study = open_study(storage, study_name, make_sampler(sampler_name, exp.config.seed, space))
  requeue_dead_local_trials(study)
  with tqdm(total=n_trials, initial=min(len(completed(study)), n_trials), unit='trial',
            desc=f'{workflow}/{sampler_name}') as bar:
    while len(completed(study)) < n_trials:
      if exp.trainer.stop_requested():
        raise KeyboardInterrupt
      trial = study.ask()
      trial.set_user_attr('worker', WORKER)
      arch = search_space.suggest_architecture(trial, space,
                                               with_identity_choices=sampler_name != 'grid')
      checkpoint_dir = trial_checkpoint_dir(workdir, study_name, trial.params)
      try:
        value, record, trained, compressed = workflows.run_trial(exp, arch, workflow,
                                                                 checkpoint_dir)
      except (KeyboardInterrupt, SystemExit):
        requeue(study, trial.number, trial.params)  # Interrupted, not failed: run it again.
        raise
      except Exception:
        study.tell(trial, state=FAIL)
        raise
      record['architecture'] = arch.to_dict()
      record['model_dir'] = model_dir(workdir, study_name, trial.number)
      checkpoints.save_model(record['model_dir'], arch=arch,
                             model_settings=exp.model_settings(), float_params=trained.params,
                             tokenizer=exp.tokenizer, int8=compressed.int8, metrics=record)
      for key, item in record.items():
        trial.set_user_attr(key, item)
      study.tell(trial, value)
      shutil.rmtree(checkpoint_dir, ignore_errors=True)
      bar.update(1)
      bar.write(summary_line(trial.number, value, record))
      on_trial_done(study)
  return study


def requeue(study: optuna.Study, number: int, params: dict):
  """Marks an unfinished trial as failed and queues its parameters to be tried again."""
  study.tell(number, state=FAIL)
  study.enqueue_trial(params, user_attrs={'retry_of': number}, skip_if_exists=False)


def requeue_dead_local_trials(study: optuna.Study):
  """Trials left RUNNING by a killed process of this host are retried at once."""
  host = socket.gethostname()
  for trial in study.get_trials(deepcopy=False, states=(RUNNING,)):
    worker_host, _, pid = trial.user_attrs.get('worker', '').rpartition(':')
    if worker_host == host and pid.isdigit() and not _process_alive(int(pid)):
      requeue(study, trial.number, trial.params)


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, owned by another user.
    pass
  return True


def trial_checkpoint_dir(workdir: str, study_name: str, params: dict) -> str:
  """Keyed by the parameters, so the retry of an interrupted trial finds its checkpoints."""
  key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(os.path.abspath(workdir), 'checkpoints', study_name, key)


def model_dir(workdir: str, study_name: str, number: int) -> str:
  return os.path.join(os.path.abspath(workdir), 'models', study_name, f'trial_{number:04d}')


def summary_line(number: int, value: float, record: dict) -> str:
  arch = record['architecture']
  identity = f' identity={len(arch["identity"])}' if arch['identity'] else ''
  return (f'trial {number}: value={value:.4f} float={record["float_accuracy"]:.4f} '
          f'int8={record["compressed_accuracy"]:.4f} | L={arch["num_layers"]} '
          f'H={arch["num_heads"]} d={arch["hidden_size"]} ff={arch["intermediate_size"]}'
          f'{identity} params={record["n_params"]:,} train={record["train_seconds"]:.1f}s')


def trial_records(study: optuna.Study) -> list[dict]:
  return [{'number': t.number, 'state': t.state.name, 'params': t.params, 'value': t.value,
           **t.user_attrs} for t in study.get_trials(deepcopy=False)]


def best_so_far(study: optuna.Study) -> list[float]:
  """Best objective after each completed trial, in trial-number order."""
  best, curve = -math.inf, []
  for t in sorted(completed(study), key=lambda t: t.number):
    best = max(best, t.value)
    curve.append(best)
  return curve


def study_results(study: optuna.Study, workflow: str, sampler: str) -> dict:
  done = completed(study)
  best = max(done, key=lambda t: t.value) if done else None
  return {'workflow': workflow, 'sampler': sampler, 'study_name': study.study_name,
          'n_complete': len(done), 'best_so_far': best_so_far(study),
          'best': None if best is None else {'number': best.number, 'value': best.value,
                                              'params': best.params, **best.user_attrs},
          'trials': trial_records(study)}


def write_json(path: str, payload: dict):
  """Writes atomically: a killed run leaves the previous file, never half of a new one."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=str)
  os.replace(tmp, path)
