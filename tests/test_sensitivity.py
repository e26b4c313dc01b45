"""The sensitivity workflow: settings by name, and every trained model scored under each."""

import json
import os

import pytest

from jaxnas import runner, sensitivity
from jaxnas.errors import UserError


def test_setting_names():
  lab = sensitivity.parse_setting('Q4.4+w50+a50')
  assert (lab.quant_engine, lab.fixed_point['width'], lab.fixed_point['frac_width']) == (
      'fixed', 8, 4)
  assert lab.fixed_point['inputs'] and lab.weight_sparsity == 0.5
  assert (lab.activation_sparsity, lab.activation_prune_scope) == (0.5, 'tensor')
  weights_only = sensitivity.parse_setting('Q2.6w')
  assert weights_only.fixed_point == dict(width=8, frac_width=6, inputs=False, weights=True,
                                          biases=True)
  assert sensitivity.parse_setting('int8', config_engine='fixed').quant_engine == 'aqt'
  int8 = sensitivity.parse_setting('int8+a30token', config_engine='qwix')
  assert (int8.quant_engine, int8.activation_sparsity, int8.activation_prune_scope) == (
      'qwix', 0.3, 'token')
  assert sensitivity.parse_setting('float').quant_engine == ''


@pytest.mark.parametrize('name', ['Q5.4', 'int4', 'Q4.4+x50', 'Q4.4+w50token', 'float+w'])
def test_bad_setting_names_are_refused(name):
  with pytest.raises(UserError, match='sensitivity setting|fixed-point width'):
    sensitivity.parse_setting(name)


def test_sensitivity_scores_each_trained_model_under_each_setting(tmp_path, test_config):
  test_config.sensitivity.settings = ('float', 'int8+w50', 'Q4.4', 'Q0.2+w90')
  test_config.train.epochs = 2  # Short of 1.000 everywhere, so the splits score apart.
  spec = runner.RunSpec(workflow='sensitivity', sampler='random', n_trials=2,
                        workdir=str(tmp_path), storage='', study_name='test')
  results = runner.run(spec, test_config)
  trials = {str(t['number']): t for t in results['runs']['baseline']['trials']}
  scores = results['sensitivity']['trials']
  assert set(scores) == set(trials) and len(scores) == 2
  for key, entry in scores.items():
    accuracy = entry['accuracy']
    # The baseline trial scored the same float model, and compressed it with the config's
    # compression (AQT int8, 50% of weights), on the same validation split.
    assert accuracy['float'] == trials[key]['float_validation_accuracy']
    assert accuracy['int8+w50'] == trials[key]['int8_validation_accuracy']
  # The equalities above can tell the splits apart: a model scores differently on them.
  assert any(entry['accuracy']['float'] != trials[key]['float_test_accuracy']
             for key, entry in scores.items())
  # Two-bit weights, 90% of them pruned: nothing of the best model is left (seen in CI: float
  # 0.683 and 0.600 on n=60, both 0.500 under Q0.2+w90; locally the best model scores > 0.7).
  best = max((entry['accuracy'] for entry in scores.values()), key=lambda a: a['float'])
  assert best['float'] >= 0.6
  assert best['Q0.2+w90'] <= best['float'] - 0.1
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['sensitivity']['settings'] == list(test_config.sensitivity.settings)
  assert os.path.getsize(tmp_path / 'sensitivity.png') > 10_000
  summary = (tmp_path / 'summary.md').read_text()
  assert '| trial | L/H/d/ff, identity | float | int8+w50 | Q4.4 | Q0.2+w90 |' in summary
  # A second run scores nothing again: every pair is in sensitivity.json.
  (tmp_path / 'results.json').unlink()
  before = (tmp_path / 'sensitivity.json').stat().st_mtime_ns
  assert runner.run(spec, test_config)['sensitivity']['trials'] == scores
  assert (tmp_path / 'sensitivity.json').stat().st_mtime_ns == before
