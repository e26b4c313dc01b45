"""Optuna's samplers and pruners as a search uses them: each new trial proposed by a sampler
seeded for it, so that an interrupted and resumed search proposes the same trials.
"""

import numpy as np
import optuna

from jaxnas import search_space
from jaxnas.errors import UserError

SAMPLERS = ('grid', 'random', 'tpe', 'nsga2')


class GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid sampler, its points in a seeded random order, with two changes.

  Each new trial takes the first point that no finished or running trial has: Optuna's takes
  the point at the trial's number, which skipped a point once an interrupted trial was retried
  under a new number. And no `study.stop()` once every point was visited: outside
  `Study.optimize` (jaxnas asks and tells) that raises, and the trial loop stops at
  `n_trials` by itself.
  """

  def before_trial(self, study, trial):
    if 'grid_id' in trial.system_attrs or 'fixed_params' in trial.system_attrs:
      return  # A retry: its parameters are fixed.
    # pylint: disable=protected-access
    state = optuna.trial.TrialState
    taken = set()
    for other in study.get_trials(deepcopy=False,
                                  states=(state.COMPLETE, state.PRUNED, state.RUNNING)):
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
