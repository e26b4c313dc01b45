"""Running an Optuna study over the search space: the trial loop of each worker (several
side by side on their own devices, or processes following process 0), the trials' models and
checkpoints, and the study's results.json record.

A study lives in its Optuna storage (see workers.py), so rerunning the same command continues
it until `n_trials` trials are complete.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from typing import Callable

import jax
import optuna

from jaxnas import (checkpoints, distributed, objectives, progress, samplers, search_space,
                    stats, workers, workflows)
from jaxnas.errors import UserError


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
  pruner = None if goals.multi else samplers.make_pruner(cfg.pruner)
  study = workers.open_study(storage, study_name, None, goals.directions, pruner,
                             cfg.heartbeat_seconds, cfg.grace_seconds)
  propose = functools.partial(samplers.proposal_sampler, sampler_name, exp.config.seed, space)
  to_run = n_trials - min(len(workers.finished(study)), n_trials)
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
    to_run = n_trials - min(len(workers.finished(study)), n_trials)
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
        asked = workers.next_trial(study, self.n_trials, self.suggest, exp.stop_requested,
                                   bar, cfg.grace_seconds, ask_lock=self.ask_lock,
                                   propose=self.propose)
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
        with workers.Heartbeat(study, trial, cfg.heartbeat_seconds):
          value, record = train_and_save(exp, arch, self.workflow, workdir, study.study_name,
                                         trial.number, trial.params, reporter(trial))
      except optuna.TrialPruned as pruned:
        trial.set_user_attr('pruned', str(pruned))
        state, values, line = workers.PRUNED, None, f'trial {trial.number}: pruned ({pruned})'
      except (KeyboardInterrupt, SystemExit):
        workers.requeue(study, trial, 'interrupted')  # Not failed: run it again.
        raise
      except Exception as e:
        trial.set_user_attr('failed', error_text(e))
        study.tell(trial, state=workers.FAIL)
        raise
      else:
        for key, item in record.items():
          trial.set_user_attr(key, item)
        if self.goals.max_model_bytes:
          trial.set_constraint('max_model_bytes', self.goals.constraints(record))
        state, values = workers.COMPLETE, self.goals.values(value, record)
        line = summary_line(trial.number, record)
      try:
        study.tell(trial, values, state=state)
      except workers.FINISHED_ERRORS:
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


def error_text(error: BaseException) -> str:
  """'ValueError: its message', first line only."""
  message = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: {message}' if message else type(error).__name__


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
    if t.state == workers.FAIL and t.number in stale:
      record.setdefault('failed', stale[t.number])
    records.append(record)
  return records


def best_so_far(study: optuna.Study, goals: objectives.Objectives) -> list[float]:
  """Best accuracy after each completed trial (pruned ones are not), in trial-number order;
  with a size limit, of feasible trials only (NaN until there is one)."""
  best, curve = -math.inf, []
  for t in sorted(workers.completed(study), key=lambda t: t.number):
    if goals.feasible(t):
      best = max(best, t.values[0])
    curve.append(best if best > -math.inf else math.nan)
  return curve


def best_trial(study: optuna.Study,
               goals: objectives.Objectives) -> optuna.trial.FrozenTrial | None:
  """The feasible completed trial with the highest accuracy (the earliest among ties)."""
  feasible = [t for t in sorted(workers.completed(study), key=lambda t: t.number)
              if goals.feasible(t)]
  return max(feasible, key=lambda t: t.values[0], default=None)


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
      'n_complete': len(workers.completed(study)),
      'n_pruned': len(study.get_trials(deepcopy=False, states=(workers.PRUNED,))),
      'best_so_far': best_so_far(study, goals),
      'best_model_dir': best_model_dir(workdir, study.study_name),
      'best': None if best is None else {'number': best.number, 'value': best.values[0],
                                          'values': best.values, 'params': best.params,
                                          **best.user_attrs},
      'trials': trial_records(study)}
  if goals.multi:
    results['pareto_front'] = [{'number': t.number, 'values': t.values}
                               for t in goals.pareto_front(workers.completed(study))]
  return results


def write_json(path: str, payload: dict):
  """Writes atomically: a killed run leaves the previous file, never half of a new one."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, default=str)
  os.replace(tmp, path)
