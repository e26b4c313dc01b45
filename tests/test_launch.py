"""End to end: the launcher's errors, and whole searches on configs/test.py."""

import json
import os
import subprocess
import sys

import pytest

from jaxnas import runner
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*flags, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *flags],
                        capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize('flags, message', [
    (['--workflow=nas'], 'flag --workflow=nas: value should be one of'),
    (['--sampler=cmaes'], 'flag --sampler=cmaes: value should be one of'),
    (['--config.train.batch_size=eight'], 'config.train.batch_size'),
    (['--n_trials=0'], 'error: --n_trials must be at least 1'),
    (['--storage=nosuchdb://x'], "error: cannot open study 'jaxnas' in storage"),
])
def test_bad_flags_give_one_clear_error(tmp_path, flags, message):
  result = launch(f'--workdir={tmp_path}', '--config=configs/test.py', *flags)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def spec(tmp_path, workflow, sampler='tpe', n_trials=2):
  return runner.RunSpec(workflow=workflow, sampler=sampler, n_trials=n_trials,
                        workdir=str(tmp_path), storage='', study_name='test')


def test_baseline_search_records_trials_and_resumes_to_the_total(tmp_path, test_config):
  runner.run(spec(tmp_path, 'baseline', sampler='grid', n_trials=2), test_config)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert (results['workflow'], results['sampler'], results['n_complete']) == ('baseline', 'grid', 2)
  first_two = results['trials']
  runner.run(spec(tmp_path, 'baseline', sampler='grid', n_trials=3), test_config)
  results = json.loads((tmp_path / 'results.json').read_text())
  trials = results['trials']
  assert [t['state'] for t in trials] == ['COMPLETE'] * 3  # Continued to 3, not 2 more.
  assert trials[:2] == first_two
  assert len({json.dumps(t['params'], sort_keys=True) for t in trials}) == 3
  for t in trials:
    arch = Architecture.from_dict(t['architecture'])
    model = BertClassifier(arch, **json.loads(
        (tmp_path / 'models' / 'test' / f'trial_{t["number"]:04d}' / 'model.json').read_text()
    )['model'])
    import jax  # pylint: disable=g-import-not-at-top
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.numpy.ones((1, 8), 'int32'))
    assert t['n_params'] == count_params(shapes['params'])
    for key in ('value', 'train_seconds', 'float_accuracy', 'compressed_accuracy', 'sparsity',
                'model_bytes', 'float_model_bytes', 'latency_ms_per_example'):
      assert t[key] is not None
    assert 0 < t['compile_seconds'] < t['trial_seconds']
    assert t['value'] == t['float_accuracy']
    assert t['model_bytes'] < t['float_model_bytes'] / 3
  post = results['post_compression']
  assert post['trial'] == results['best']['number']
  assert 0 <= post['compressed_accuracy'] <= 1 and 0 <= post['retrained_compressed_accuracy'] <= 1
  assert (tmp_path / 'best_so_far.png').stat().st_size > 0
  best = results['best']
  assert results['best_model_dir'] == str(tmp_path / 'best_model' / 'test')
  assert json.loads((tmp_path / 'best_model' / 'test' / 'model.json').read_text())['metrics'][
      'float_accuracy'] == best['float_accuracy']
  evaluated = runner.run(runner.RunSpec('evaluate', 'tpe', 1, str(tmp_path), '', 'test',
                                        checkpoint=os.path.relpath(results['best_model_dir'])),
                         test_config)
  assert evaluated['float_accuracy'] == pytest.approx(best['float_accuracy'], abs=1e-6)
  assert evaluated['compressed_accuracy'] == pytest.approx(best['compressed_accuracy'], abs=1e-6)


def test_workdir_of_another_config_is_refused_untouched(tmp_path, test_config):
  (tmp_path / 'config.json').write_text(json.dumps({'seed': 123}))
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(UserError, match='different config'):
    runner.run(spec(tmp_path, 'retrain'), test_config)
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_compare_runs_three_workflows_into_one_figure(tmp_path, test_config):
  runner.run(spec(tmp_path, 'compare', n_trials=1), test_config)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert set(results['runs']) == {'baseline', 'compress', 'retrain'}
  for name, run in results['runs'].items():
    (trial,) = run['trials']
    assert trial['state'] == 'COMPLETE'
    assert trial['sparsity'] == pytest.approx(0.5, abs=1e-3)
    expected = trial['float_accuracy'] if name == 'baseline' else trial['compressed_accuracy']
    assert trial['value'] == expected
  retrained = results['runs']['retrain']['trials'][0]
  assert 'accuracy_before_retrain' in retrained
  assert retrained['resumed_from_step'] == {'float': 0, 'retrain': 0}
  phases = ('train_seconds', 'retrain_seconds', 'eval_seconds')
  assert all(retrained[phase] > 0 for phase in phases)
  assert sum(retrained[phase] for phase in phases) < retrained['trial_seconds']
  assert (tmp_path / 'nas_comparison_curve.png').stat().st_size > 0
  summary = (tmp_path / 'summary.md').read_text()
  assert all(f'| {name} |' in summary for name in ('baseline', 'compress', 'retrain'))
  assert '| baseline + post compression |' in summary
