"""Workers sharing one Optuna study through its storage (an SQLite file in the workdir by
default, or any RDB URL): opening it, the trial states that count, asking each worker's next
trial, heartbeats, retrying the trials of dead workers, and which worker writes the results.
"""

import collections
import datetime
import functools
import os
import socket
import threading
import time
import warnings

import optuna
import sqlalchemy

from jaxnas.errors import UserError

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


def next_trial(study: optuna.Study, n_trials: int, suggest, stop_requested, bar,
               grace_seconds: float, ask_lock: threading.Lock, propose,
               max_duplicates: int = 100) -> tuple[optuna.Trial, object] | None:
  """(trial, architecture) this worker runs next, or None once `n_trials` trials are finished.

  Waits while the trials other workers are running would complete the study. Several workers
  may ask at the same moment: a trial asked beyond the missing count, or with the parameters
  of an earlier trial, is marked failed (user attr `skipped`) and never run. `propose(slot,
  attempt)` is the sampler of each new trial (`samplers.proposal_sampler`).
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
  run again with their params; the retry says why (`search.trial_records` moves it to the
  failed trial)."""
  study.enqueue_trial(trial.params, user_attrs={'retry_of': trial.number,
                                                'retry_reason': STALE_REASON},
                      skip_if_exists=False)


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
