"""Optuna studies over the search space: samplers, storage, the trial loop and results.json.

A study lives in its Optuna storage (an SQLite file in the workdir by default, or any RDB
URL), so rerunning the same command continues it until `n_trials` trials are complete.
"""

import collections
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from typing import Callable

import jax
import numpy as np
import optuna
import sqlalchemy

from jaxnas import (checkpoints, distributed, objectives, progress, search_space, stats,
                    workflows)
from jaxnas.errors import UserError

SAMPLERS = ('grid', 'random', 'tpe', 'nsga2')
COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
FAIL = optuna.trial.TrialState.FAIL
WAITING = optuna.trial.TrialState.WAITING
PRUNED = optuna.trial.TrialState.PRUNED
# What telling an already finished trial raises (the storage's error when it is a race).
FINISHED_ERRORS = (ValueError, optuna.exceptions.UpdateFinishedTrialError)
POLL_SECONDS = 5  # How often a worker with nothing to run checks the study again.
WORKER = f'{socket.gethostname()}:{os.getpid()}'
STARTED = datetime.datetime.now()  # Local and naive, like Optuna's trial times.
STALE_REASON = 'no heartbeat for config.search.grace_seconds (its worker died or hung)'


class GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid sampler, its points in a seeded random order, with two changes.

  Each new trial takes the first point that no finished or running trial has: Optuna's takes
  the point at the trial's number, which skipped a point once an interrupted trial was retried
  under a new number. And no `study.stop()` once every point was visited: outside
  `Study.optimize` (this module asks and tells) that raises, and the trial loop stops at
  `n_trials` by itself.
  """

  def before_trial(self, study, trial):
    if 'grid_id' in trial.system_attrs or 'fixed_params' in trial.system_attrs:
      return  # A retry: its parameters are fixed.
    # pylint: disable=protected-access
    taken = set()
    for other in study.get_trials(deepcopy=False, states=(COMPLETE, PRUNED, RUNNING)):
      if 'grid_id' in other.system_attrs:
        taken.add(self._all_grids[other.system_attrs['grid_id']])
      if set(other.params) == set(self._param_names):  # A retry has no grid_id.
        taken.add(tuple(other.params[name] for name in self._param_names))
    free = [i for i, point in enumerate(self._all_grids) if point not in taken]
    # Every point taken (workers racing for the last ones): a duplicate, which is skipped.
    study._storage.set_trial_system_attr(trial._trial_id, 'search_space', self._search_space)
    study._storage.set_trial_system_attr(trial._trial_id, 'grid_id', free[0] if free else 0)

  def after_trial(self, study, trial, state, values):
    del study, trial, state, values


class NSGAIISampler(optuna.samplers.NSGAIISampler):
  """Optuna's NSGA-II, in which the retry of an interrupted trial belongs to the generation
  of the trial it retries.

  Optuna gives a trial with fixed parameters (a retry) no generation: it joined no population,
  so the generation took one trial more and bred other children than without the interruption.
  """

  def before_trial(self, study, trial):
    super().before_trial(study, trial)
    retried = trial.user_attrs.get('retry_of')
    if retried is None:
      return
    # pylint: disable=protected-access
    storage, key = study._storage, self._get_generation_key()
    original = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
        study._study_id, retried))
    if key in original.system_attrs:
      storage.set_trial_system_attr(trial._trial_id, key, original.system_attrs[key])


def make_sampler(name: str, seed: int, space: dict) -> optuna.samplers.BaseSampler:
  """Grid and random sampling ignore constraints (`Trial.set_constraint`); TPE and NSGA-II
  steer towards them."""
  if name == 'grid':
    return GridSampler(search_space.grid_search_space(space), seed=seed)
  if name == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  if name == 'tpe':
    return optuna.samplers.TPESampler(seed=seed)
  if name == 'nsga2':
    return NSGAIISampler(seed=seed)
  raise UserError(f'unknown sampler {name!r}; use one of {", ".join(SAMPLERS)}')


def sampler_seed(seed: int, *counts: int) -> int:
  """A seed of its own for each `counts` (e.g. trials so far), and for each run seed."""
  return int(np.random.SeedSequence([seed, *counts]).generate_state(1)[0])


def proposal_sampler(name: str, seed: int, space: dict, slot: int,
                     attempt: int = 0) -> optuna.samplers.BaseSampler:
  """The sampler that proposes a study's next trial, when `slot` trials are finished or
  running, after `attempt` proposals for it that repeated an earlier trial.

  Seeded from these alone, a search proposes the same trials whether or not it was
  interrupted and resumed: the sampler does not carry random state from one proposal to the
  next, which a rerun would start afresh. TPE and NSGA-II read the finished trials, which a
  resumed search has too. The grid keeps the run's seed: it fixes the order of the points,
  which each proposal goes on with.
  """
  return make_sampler(name, seed if name == 'grid' else sampler_seed(seed, slot, attempt),
                      space)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
  """Stops hopeless trials from the eval accuracy they report while training."""
  if name == 'none':
    return optuna.pruners.NopPruner()
  if name == 'median':
    return optuna.pruners.MedianPruner(n_startup_trials=2)
  if name == 'hyperband':
    return optuna.pruners.HyperbandPruner()
  raise UserError(f'unknown pruner {name!r}; use one of none, median, hyperband')


def default_storage(workdir: str) -> str:
  return f'sqlite:///{os.path.abspath(os.path.join(workdir, "study.db"))}'


def open_study(storage: str, study_name: str, sampler, directions=('maximize',), pruner=None,
               heartbeat_seconds: int = 10, grace_seconds: int = 60) -> optuna.Study:
  """Creates the study or loads it to continue; a bad or unreachable URL is a UserError.

  Running trials record a heartbeat every `heartbeat_seconds`; one whose heartbeat is older
  than `grace_seconds` belonged to a dead worker (on any host) and is queued again.
  """
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
  # Heartbeats are recorded by `Heartbeat` below, not by Study.optimize.
  warnings.filterwarnings('ignore', message='Heartbeat of storage is supposed to be used')
  try:
    rdb = _rdb_storage(storage, heartbeat_seconds, grace_seconds)
    study = optuna.create_study(storage=rdb, study_name=study_name, sampler=sampler,
                                pruner=pruner, directions=list(directions),
                                load_if_exists=True)
  except Exception as e:  # SQLAlchemy raises many types for bad URLs and dead servers.
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(f'cannot open study {study_name!r} in storage {storage!r}: {message}') from e
  if [d.name.lower() for d in study.directions] != list(directions):
    raise UserError(f'study {study_name!r} optimizes {len(study.directions)} objective(s), not '
                    f'{len(directions)}; use another --study_name or the same --objectives')
  return study


def _rdb_storage(url: str, heartbeat_seconds: int, grace_seconds: int,
                 attempts: int = 5) -> optuna.storages.RDBStorage:
  """Workers started together on a new database race to create Optuna's tables; PostgreSQL
  then fails all but one of them with a unique violation. The others try again."""
  for attempt in range(attempts):
    try:
      return optuna.storages.RDBStorage(
          url, engine_kwargs={'pool_pre_ping': True}, heartbeat_interval=heartbeat_seconds,
          grace_period=grace_seconds, heartbeat_stale_trial_callback=_retry)
    except sqlalchemy.exc.IntegrityError:
      if attempt == attempts - 1:
        raise
      time.sleep(1 + attempt)


def finished_count(storage: str, study_name: str) -> int:
  """Finished trials of a study in `storage` (0 if it cannot be read or does not exist)."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  try:
    return len(finished(optuna.load_study(study_name=study_name, storage=storage)))
  except Exception:  # pylint: disable=broad-except  # Absent or unreadable: run as usual.
    return 0


def completed(study: optuna.Study) -> list:
  return study.get_trials(deepcopy=False, states=(COMPLETE,))


def finished(study: optuna.Study) -> list:
  """Trials that count towards --n_trials: complete, or pruned while training."""
  return study.get_trials(deepcopy=False, states=(COMPLETE, PRUNED))


class Heartbeat:
  """Records a running trial's heartbeat in the storage from a background thread."""

  def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float):
    self._stop = threading.Event()
    # Optuna's own heartbeat runs only inside study.optimize, not for ask-and-tell loops.
    # pylint: disable-next=protected-access
    record = lambda: study._storage.record_heartbeat(trial._trial_id)

    def beat():
      while True:
        record()
        if self._stop.wait(interval):
          return
    self._thread = threading.Thread(target=beat, daemon=True)

  def __enter__(self):
    self._thread.start()

  def __exit__(self, *exc_info):
    self._stop.set()
    self._thread.join()


def run_study(exp: workflows.Experiment, workflow: str, sampler_name: str, n_trials: int,
              storage: str, study_name: str, workdir: str,
              on_trial_done: Callable[[optuna.Study], None],
              identity_choices: bool = True, device_groups=None) -> optuna.Study | None:
  """Runs trials until `n_trials` are finished (complete or pruned) in total, alone or with
  other workers.

  A rerun continues the study. Workers sharing a storage never start more trials than are
  missing, never evaluate the same parameters twice, and take over dead workers' trials.
  In a multi-process run, process 0 runs this loop and the other processes follow it; they
  return None. `identity_choices`: whether the Linear/Identity choices are searched (never
  by the grid, see search_space.py). `device_groups` (`train.device_groups`): with more than
  one, a trial runs on each group at the same time, each group a worker of its own.
  """
  space = search_space.validate_space(exp.config.search.space)
  if sampler_name == 'grid' and n_trials > search_space.grid_size(space):
    raise UserError(f'the grid has {search_space.grid_size(space)} points; '
                    f'--n_trials={n_trials} is more')
  suggest = functools.partial(search_space.suggest_architecture, space=space,
                              with_identity_choices=identity_choices and sampler_name != 'grid')
  if not distributed.is_leader():
    return follow_study(exp, workflow, suggest, workdir, study_name)
  cfg = exp.config.search
  goals = objectives.Objectives.parse(cfg.objectives, cfg.max_model_bytes)
  # Optuna prunes single-objective studies only.
  pruner = None if goals.multi else make_pruner(cfg.pruner)
  study = open_study(storage, study_name, None, goals.directions, pruner,
                     cfg.heartbeat_seconds, cfg.grace_seconds)
  propose = functools.partial(proposal_sampler, sampler_name, exp.config.seed, space)
  to_run = n_trials - min(len(finished(study)), n_trials)
  steps_per_trial = announce_work(exp, workflow, study_name, to_run)
  with progress.bar(total=n_trials, initial=n_trials - to_run, unit='trial',
                    desc=f'{workflow}/{sampler_name}',
                    bar_format=progress.WITHOUT_ESTIMATE) as bar:
    loop = TrialLoop(study, workflow, workdir, n_trials, suggest, goals, bar, on_trial_done,
                     steps_per_trial, propose)
    if device_groups and len(device_groups) > 1:
      loop.run_side_by_side(exp, device_groups)
    else:
      loop.run(exp)
  return study


def announce_work(exp: workflows.Experiment, workflow: str, study_name: str,
                  to_run: int) -> int:
  """Writes how much work the study has left (before its bar appears); returns the training
  steps of a trial."""
  steps = workflows.steps_per_trial(exp, workflow)
  per_trial = sum(steps.values())
  parts = ' + '.join(f'{count:,} {phase}' for phase, count in steps.items())
  progress.say(f"study '{study_name}': {to_run} trial(s) to run, {per_trial:,} training steps "
               f'each ({parts}), scored on {len(exp.validation_split):,} validation and '
               f'{len(exp.test_split):,} test examples; {to_run * per_trial:,} steps in all',
               sys.stdout)
  return per_trial


class TrialLoop:
  """This process's trials of a study: asks for the next one, runs it, tells the result,
  until `n_trials` are finished. Several loops may run at once, in threads, each a worker
  with its own devices; they share the progress bar, which shows the time left at the pace
  of the training steps so far."""

  def __init__(self, study: optuna.Study, workflow: str, workdir: str, n_trials: int, suggest,
               goals: objectives.Objectives, bar, on_trial_done, steps_per_trial: int,
               propose):
    self.study, self.workflow, self.workdir, self.n_trials = study, workflow, workdir, n_trials
    self.suggest, self.goals, self.bar, self.on_trial_done = suggest, goals, bar, on_trial_done
    self.steps_per_trial, self.propose = steps_per_trial, propose
    to_run = n_trials - min(len(finished(study)), n_trials)
    self.time_left = progress.TimeLeft(to_run * steps_per_trial)
    self.lock = threading.Lock()  # Around the bar, the time left, results and the best model.
    self.ask_lock = threading.Lock()
    self._shown = time.monotonic()

  def run(self, exp: workflows.Experiment):
    study, workdir, bar, cfg = self.study, self.workdir, self.bar, exp.config.search
    steps_in_trial = 0
    interval = progress.refresh_interval(bar)

    def on_step():
      nonlocal steps_in_trial
      steps_in_trial += 1
      with self.lock:
        self.time_left.done += 1
        if time.monotonic() - self._shown >= interval:
          self._shown = time.monotonic()
          bar.set_postfix_str(self.time_left.text())

    exp = dataclasses.replace(exp, trainer=exp.trainer.with_on_step(on_step))
    while True:
      try:
        asked = next_trial(study, self.n_trials, self.suggest, exp.stop_requested, bar,
                           cfg.grace_seconds, ask_lock=self.ask_lock, propose=self.propose)
      except KeyboardInterrupt:
        distributed.broadcast_json('stop')
        raise
      distributed.broadcast_json(
          None if asked is None else {'number': asked[0].number, 'params': asked[0].params})
      if asked is None:
        return
      trial, arch = asked
      record_architecture(trial, arch)
      steps_in_trial = 0
      try:
        with Heartbeat(study, trial, cfg.heartbeat_seconds):
          value, record = train_and_save(exp, arch, self.workflow, workdir, study.study_name,
                                         trial.number, trial.params, reporter(trial))
      except optuna.TrialPruned as pruned:
        trial.set_user_attr('pruned', str(pruned))
        state, values, line = PRUNED, None, f'trial {trial.number}: pruned ({pruned})'
      except (KeyboardInterrupt, SystemExit):
        requeue(study, trial, 'interrupted')  # Not failed: run it again.
        raise
      except Exception as e:
        trial.set_user_attr('failed', error_text(e))
        study.tell(trial, state=FAIL)
        raise
      else:
        for key, item in record.items():
          trial.set_user_attr(key, item)
        if self.goals.max_model_bytes:
          trial.set_constraint('max_model_bytes', self.goals.constraints(record))
        state, values = COMPLETE, self.goals.values(value, record)
        line = summary_line(trial.number, record)
      try:
        study.tell(trial, values, state=state)
      except FINISHED_ERRORS:
        progress.say(f'trial {trial.number} finished after another worker took it for dead; '
                     'its retry counts instead (raise --config.search.grace_seconds)',
                     sys.stdout)
        continue
      shutil.rmtree(trial_checkpoint_dir(workdir, study.study_name, trial.params),
                    ignore_errors=True)
      with self.lock:
        # The steps a pruned or resumed trial did not run here.
        self.time_left.done += max(0, self.steps_per_trial - steps_in_trial)
        bar.set_postfix_str(self.time_left.text(), refresh=False)
        bar.update(1)
        progress.say(line, sys.stdout)
        best = best_trial(study, self.goals)
        if best is not None and best.number == trial.number:  # Complete and feasible.
          checkpoints.export_model(record['model_dir'],
                                   best_model_dir(workdir, study.study_name))
        self.on_trial_done(study)

  def run_side_by_side(self, exp: workflows.Experiment, device_groups):
    """One worker thread per device group, each running trials on its own devices alone.

    Threads, not processes: the data, tokenizer and compiled programs are loaded once; each
    thread's trainer puts its arrays on its own mesh, and the trials' work runs in XLA
    without the interpreter lock. A stop request (or a failure of one worker) stops all of
    them after their current step, with their checkpoints saved.
    """
    failed = threading.Event()
    stop_requested = lambda: exp.stop_requested() or failed.is_set()
    errors = []

    def work(devices):
      trainer = exp.trainer.on_devices(devices, show_progress=False,
                                       stop_requested=stop_requested)
      try:
        self.run(dataclasses.replace(exp, trainer=trainer, stop_requested=stop_requested))
      except BaseException as e:  # pylint: disable=broad-except  # Re-raised below.
        errors.append(e)
        failed.set()

    threads = [threading.Thread(target=work, args=(devices,), daemon=True)
               for devices in device_groups]
    for thread in threads:
      thread.start()
    try:
      for thread in threads:
        while thread.is_alive():
          thread.join(0.5)
    except KeyboardInterrupt:  # A second signal: the trials still running are retried later.
      failed.set()
      raise
    # A worker's failure first; the others then stopped with KeyboardInterrupt.
    errors.sort(key=lambda e: isinstance(e, KeyboardInterrupt))
    if errors:
      raise errors[0]


def record_architecture(trial: optuna.Trial, arch):
  """The architecture as user attributes: whole, and one flat attribute per size in real units
  (`hidden_size` = 192 where the sampled parameter is `hidden_size_idx` = 1), which Optuna's
  dashboard and `study.trials_dataframe()` show as columns."""
  trial.set_user_attr('architecture', arch.to_dict())
  for name in search_space.SIZE_NAMES:
    trial.set_user_attr(name, getattr(arch, name))
  trial.set_user_attr('n_identity', len(arch.identity))


def follow_study(exp: workflows.Experiment, workflow: str, suggest, workdir: str,
                 study_name: str) -> None:
  """Processes other than 0: run each trial that process 0 broadcasts with it, until it
  broadcasts the end of the study (None) or an interrupt ('stop')."""
  while (message := distributed.broadcast_json(None)) is not None:
    if message == 'stop':
      raise KeyboardInterrupt
    arch = suggest(optuna.trial.FixedTrial(message['params']))
    try:
      train_and_save(exp, arch, workflow, workdir, study_name, message['number'],
                     message['params'], reporter(None))
    except optuna.TrialPruned:
      continue


def reporter(trial: optuna.Trial | None):
  """`report(step, accuracy)` for training: process 0 reports to the trial and asks its
  pruner; every process raises TrialPruned when it says so (`trial` is None off process 0)."""
  def report(step: int, accuracy: float):
    prune = None
    if trial is not None:
      trial.report(accuracy, step)
      prune = trial.should_prune()
    if distributed.broadcast_json(prune):
      raise optuna.TrialPruned(f'eval accuracy {accuracy:.4f} at step {step}')
  return report


def train_and_save(exp: workflows.Experiment, arch, workflow: str, workdir: str,
                   study_name: str, number: int, params: dict,
                   report=None) -> tuple[float, dict]:
  """Runs a trial (resuming from its checkpoints) and saves its model: (objective, record)."""
  value, record, trained, compressed = workflows.run_trial(
      exp, arch, workflow, trial_checkpoint_dir(workdir, study_name, params), report)
  distributed.assert_same(value, f'the objective of trial {number}')
  record['architecture'] = arch.to_dict()
  record['model_dir'] = model_dir(workdir, study_name, number)
  record['num_processes'] = jax.process_count()
  # Where the trained weights live: this trial's devices (its group of them, side by side).
  record['devices'] = sorted(device.id for device in
                             jax.tree.leaves(trained.params)[0].sharding.device_set)
  checkpoints.save_model(record['model_dir'], arch=arch, model_settings=exp.model_settings(),
                         float_params=trained.params, tokenizer=exp.tokenizer,
                         data=exp.data_record(),
                         int8=compressed.int8, metrics=record)
  return value, record


def next_trial(study: optuna.Study, n_trials: int, suggest, stop_requested, bar,
               grace_seconds: float, ask_lock: threading.Lock, propose,
               max_duplicates: int = 100) -> tuple[optuna.Trial, object] | None:
  """(trial, architecture) this worker runs next, or None once `n_trials` trials are finished.

  Waits while the trials other workers are running would complete the study. Several workers
  may ask at the same moment: a trial asked beyond the missing count, or with the parameters
  of an earlier trial, is marked failed (user attr `skipped`) and never run. `propose(slot,
  attempt)` is the sampler of each new trial (`proposal_sampler`).
  """
  duplicates = 0
  while True:
    if stop_requested():
      raise KeyboardInterrupt
    # Threads of one process (trials side by side) take turns: two popped the same queued
    # retry, or both queued a retry of the same dead trial.
    with ask_lock:
      outcome = _ask_once(study, n_trials, suggest, grace_seconds, bar,
                          functools.partial(propose, attempt=duplicates))
    if outcome is None:
      return None
    if outcome == 'wait':
      time.sleep(POLL_SECONDS)
      continue
    if outcome in ('surplus', 'duplicate'):
      duplicates += outcome == 'duplicate'
      if duplicates > max_duplicates:
        raise UserError('the sampler keeps proposing architectures that were already '
                        'evaluated; the search space may be exhausted')
      continue
    trial, arch = outcome
    bar.set_postfix_str('', refresh=False)  # Redrawn by the next update.
    return trial, arch


def _ask_once(study: optuna.Study, n_trials: int, suggest, grace_seconds: float, bar,
              propose):
  """One attempt of `next_trial`: None (the study is finished), 'wait' (shown on `bar`),
  'surplus' or 'duplicate' (a trial asked and marked failed), or (trial, architecture)."""
  optuna.storages.fail_stale_trials(study)
  requeue_dead_trials(study, grace_seconds)
  counts = collections.Counter(t.state for t in study.get_trials(deepcopy=False))
  if counts[COMPLETE] + counts[PRUNED] >= n_trials:
    return None
  if counts[COMPLETE] + counts[PRUNED] + counts[RUNNING] >= n_trials and not counts[WAITING]:
    bar.set_postfix_str(f'waiting for {counts[RUNNING]} running trial(s)')
    return 'wait'
  study.sampler = propose(counts[COMPLETE] + counts[PRUNED] + counts[RUNNING])
  trial = study.ask()
  trial.set_user_attr('worker', WORKER)  # First, so a kill from here on is detected.
  earlier = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE, PRUNED, RUNNING))
             if t.number < trial.number]
  if len(earlier) >= n_trials:
    trial.set_user_attr('skipped', 'surplus')
    study.tell(trial, state=FAIL)
    return 'surplus'
  arch = suggest(trial)
  if any(t.params == trial.params for t in earlier):
    trial.set_user_attr('skipped', 'duplicate')
    study.tell(trial, state=FAIL)
    return 'duplicate'
  return trial, arch


def requeue(study: optuna.Study, trial, reason: str):
  """Marks an unfinished trial (an `optuna.Trial` or a frozen one) as failed, saying why
  (user attr `failed`), and queues its parameters to be tried again.

  When several workers find the same dead trial, only the one whose update succeeds queues it.
  """
  try:
    # pylint: disable-next=protected-access
    study._storage.set_trial_user_attr(trial._trial_id, 'failed', reason)
    study.tell(trial.number, state=FAIL)
  except FINISHED_ERRORS:
    return
  study.enqueue_trial(trial.params, user_attrs={'retry_of': trial.number}, skip_if_exists=False)


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial):
  """Heartbeat-stale trials (already marked failed by Optuna, which then takes no attribute)
  run again with their params; the retry says why (`trial_records` moves it to the failed
  trial)."""
  study.enqueue_trial(trial.params, user_attrs={'retry_of': trial.number,
                                                'retry_reason': STALE_REASON},
                      skip_if_exists=False)


def error_text(error: BaseException) -> str:
  """'ValueError: its message', first line only."""
  message = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: {message}' if message else type(error).__name__


def requeue_dead_trials(study: optuna.Study, grace_seconds: float):
  """Retries the trials left RUNNING by dead workers that heartbeats cannot catch: a killed
  process of this host (at once, without waiting for a heartbeat to go stale), and a worker
  killed between asking for a trial and naming itself on it."""
  too_old = datetime.datetime.now() - datetime.timedelta(seconds=grace_seconds)
  for trial in study.get_trials(deepcopy=False, states=(RUNNING,)):
    worker = trial.user_attrs.get('worker')
    if _dead_local_worker(worker or ''):
      requeue(study, trial, f'its worker ({worker}) died')
    elif worker is None and trial.datetime_start < too_old:
      requeue(study, trial, 'its worker died before it started')


def _dead_local_worker(worker: str) -> bool:
  """Whether `worker` ('host:pid') is a process of this host that has exited."""
  host, _, pid = worker.rpartition(':')
  if host != socket.gethostname() or not pid.isdigit():
    return False
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # Alive, owned by another user.
    pass
  return False


def trial_checkpoint_dir(workdir: str, study_name: str, params: dict) -> str:
  """Keyed by the parameters, so the retry of an interrupted trial finds its checkpoints."""
  key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(os.path.abspath(workdir), 'checkpoints', study_name, key)


def model_dir(workdir: str, study_name: str, number: int) -> str:
  return os.path.join(os.path.abspath(workdir), 'models', study_name, f'trial_{number:04d}')


def best_model_dir(workdir: str, study_name: str) -> str:
  """The export of the study's best model so far (a copy of its trial's model directory)."""
  return os.path.join(os.path.abspath(workdir), 'best_model', study_name)


def summary_line(number: int, record: dict) -> str:
  """One line per finished trial: each accuracy named by its model form and split."""
  arch = record['architecture']
  identity = f' identity={len(arch["identity"])}' if arch['identity'] else ''
  before = record.get('int8_validation_accuracy_before_retrain')
  int8 = (f'int8 before/after QAT {before:.3f}/{record["int8_validation_accuracy"]:.3f}'
          if before is not None else f'int8 {record["int8_validation_accuracy"]:.3f}')
  return (f'trial {number}: validation (n={record["n_validation"]}): '
          f'float {record["float_validation_accuracy"]:.3f}, {int8} | test '
          f'(n={record["n_test"]}): {stats.interval_text(record, "test")} | '
          f'L={arch["num_layers"]} H={arch["num_heads"]} d={arch["hidden_size"]} '
          f'ff={arch["intermediate_size"]}{identity} params={record["n_params"]:,} '
          f'{record["trial_seconds"]:.0f}s')


def trial_records(study: optuna.Study) -> list[dict]:
  """One record per trial; a failed trial's says why (`failed`; `skipped` if never run)."""
  trials = study.get_trials(deepcopy=False)
  stale = {t.user_attrs['retry_of']: t.user_attrs['retry_reason'] for t in trials
           if 'retry_reason' in t.user_attrs}
  records = []
  for t in trials:
    record = {'number': t.number, 'state': t.state.name, 'params': t.params,
              'value': t.values[0] if t.values else None, 'values': t.values, **t.user_attrs}
    if t.state == FAIL and t.number in stale:
      record.setdefault('failed', stale[t.number])
    records.append(record)
  return records


def best_so_far(study: optuna.Study, goals: objectives.Objectives) -> list[float]:
  """Best accuracy after each completed trial (pruned ones are not), in trial-number order;
  with a size limit, of feasible trials only (NaN until there is one)."""
  best, curve = -math.inf, []
  for t in sorted(completed(study), key=lambda t: t.number):
    if goals.feasible(t):
      best = max(best, t.values[0])
    curve.append(best if best > -math.inf else math.nan)
  return curve


def best_trial(study: optuna.Study,
               goals: objectives.Objectives) -> optuna.trial.FrozenTrial | None:
  """The feasible completed trial with the highest accuracy (the earliest among ties)."""
  feasible = [t for t in sorted(completed(study), key=lambda t: t.number) if goals.feasible(t)]
  return max(feasible, key=lambda t: t.values[0], default=None)


def writes_final_results(study: optuna.Study) -> bool:
  """Whether this process writes the study's final results and figures: the worker that
  finished its last trial does, or a run started on the same host after that trial, once its
  worker has exited (say it died before writing). Workers that ran beside it do not, even
  when it exits before they look."""
  last = max(finished(study), key=lambda t: t.datetime_complete, default=None)
  if last is None:
    return False
  worker = last.user_attrs.get('worker', '')
  return worker == WORKER or (STARTED > last.datetime_complete and _dead_local_worker(worker))


def study_results(study: optuna.Study, workflow: str, sampler: str, workdir: str,
                  goals: objectives.Objectives, exp: workflows.Experiment,
                  identity_choices: bool = True) -> dict:
  """The study's results.json record; every accuracy that selects is a validation accuracy."""
  best = best_trial(study, goals)
  space = search_space.validate_space(exp.config.search.space)
  results = {
      'workflow': workflow, 'sampler': sampler, 'study_name': study.study_name,
      'seed': exp.config.seed,
      'search_space': {**space, 'identity_choices': identity_choices and sampler != 'grid',
                       'grid_points': search_space.grid_size(space) if sampler == 'grid'
                                      else None},
      'n_validation': len(exp.validation_split), 'n_test': len(exp.test_split),
      'label_names': list(exp.label_names),
      'majority_class_accuracy': stats.majority_class_accuracy(exp.test_split.labels),
      'validation_majority_class_accuracy':
          stats.majority_class_accuracy(exp.validation_split.labels),
      'compression': exp.compression_settings(),
      'objectives': list(goals.names), 'max_model_bytes': goals.max_model_bytes or None,
      'n_complete': len(completed(study)),
      'n_pruned': len(study.get_trials(deepcopy=False, states=(PRUNED,))),
      'best_so_far': best_so_far(study, goals),
      'best_model_dir': best_model_dir(workdir, study.study_name),
      'best': None if best is None else {'number': best.number, 'value': best.values[0],
                                          'values': best.values, 'params': best.params,
                                          **best.user_attrs},
      'trials': trial_records(study)}
  if goals.multi:
    results['pareto_front'] = [{'number': t.number, 'values': t.values}
                               for t in goals.pareto_front(completed(study))]
  return results


def write_json(path: str, payload: dict):
  """Writes atomically: a killed run leaves the previous file, never half of a new one."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=str)
  os.replace(tmp, path)
