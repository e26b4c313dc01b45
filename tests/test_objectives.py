"""Multi-objective search under a size limit, and pruned trials."""

import json

import optuna
import pytest
from conftest import series_drawn

from jaxnas import objectives, runner, samplers
from jaxnas.errors import UserError


@pytest.mark.parametrize('text', ['size', 'accuracy,speed', 'accuracy,size,size', ''])
def test_bad_objectives_are_a_clear_error(text):
  with pytest.raises(UserError, match='--objectives'):
    objectives.Objectives.parse(text)


def test_pareto_front_is_non_dominated_and_feasible():
  goals = objectives.Objectives.parse('accuracy,size', max_model_bytes=100)
  trials = [optuna.trial.create_trial(values=list(v), user_attrs={'model_bytes': v[1]})
            for v in [(0.7, 90), (0.8, 95), (0.75, 99), (0.9, 150), (0.6, 50), (0.6, 60)]]
  for number, trial in enumerate(trials):
    trial.number = number
  front = goals.pareto_front(trials)
  assert [t.number for t in front] == [0, 1, 4]  # 3 is too big, 2 and 5 are dominated.


def spec(tmp_path, n_trials, sampler='tpe', workflow='compress'):
  return runner.RunSpec(workflow=workflow, sampler=sampler, n_trials=n_trials,
                        workdir=str(tmp_path), storage='', study_name='test')


def test_multi_objective_search_under_a_size_limit(tmp_path, test_config):
  test_config.search.objectives = 'accuracy,size'
  test_config.search.max_model_bytes = 1_000_000
  test_config.search.space.num_layers = (2,)
  test_config.search.space.hidden_size = (128, 192)
  runner.run(spec(tmp_path, 3, sampler='nsga2'), test_config)
  results = json.loads((tmp_path / 'results.json').read_text())
  trials = {t['number']: t for t in results['trials'] if t['state'] == 'COMPLETE'}
  assert len(trials) == 3 and results['objectives'] == ['accuracy', 'size']
  # The front, found here by brute force: the feasible trials that no feasible trial beats.
  feasible = [t for t in trials.values() if t['model_bytes'] <= 1_000_000]
  beaten = lambda t: any(o['value'] >= t['value'] and o['model_bytes'] <= t['model_bytes'] and
                         (o['value'], o['model_bytes']) != (t['value'], t['model_bytes'])
                         for o in feasible)
  assert sorted(p['number'] for p in results['pareto_front']) == sorted(
      t['number'] for t in feasible if not beaten(t))
  for point in results['pareto_front']:
    trial = trials[point['number']]
    assert trial['values'] == [trial['int8_validation_accuracy'], trial['model_bytes']]
  assert results['best'] is None or results['best']['model_bytes'] <= 1_000_000
  # The front is drawn in red.
  assert series_drawn(tmp_path / 'pareto_front.png') == bool(results['pareto_front'])


class PruneAfterFirstTrial(optuna.pruners.BasePruner):
  def prune(self, study, trial):
    del study
    return trial.number >= 1


def test_pruned_trials_are_recorded_and_a_rerun_resumes(tmp_path, test_config, monkeypatch):
  monkeypatch.setattr(samplers, 'make_pruner', lambda name: PruneAfterFirstTrial())
  test_config.search.report_every_steps = 4
  runner.run(spec(tmp_path, 2), test_config)
  runner.run(spec(tmp_path, 3), test_config)  # Continues to 3 finished trials.
  results = json.loads((tmp_path / 'results.json').read_text())
  trials = [t for t in results['trials'] if 'skipped' not in t]
  assert [t['state'] for t in trials] == ['COMPLETE', 'PRUNED', 'PRUNED']
  assert (results['n_complete'], results['n_pruned']) == (1, 2)
  assert len(results['best_so_far']) == 1 and results['best']['number'] == 0
  assert all(t['pruned'].endswith('at step 4') for t in trials[1:])
  study = optuna.load_study(study_name='test', storage=f'sqlite:///{tmp_path}/study.db')
  assert list(study.trials[0].intermediate_values) == list(range(4, 46, 4))  # 3 x 15 steps.
  assert list(study.trials[trials[1]['number']].intermediate_values) == [4]
