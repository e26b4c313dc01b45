"""End to end: the launcher's errors, and whole searches on configs/test.py."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import scipy.stats
from conftest import series_drawn, use_noisy_reviews

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
    (['--repeats=0'], 'error: --repeats must be at least 1'),
    (['--config=configs/does_not_exist.py'], 'error: cannot load --config: [Errno 2]'),
    (['--config.train.nonsense=1'], 'error: --config.* names no such config field'),
    (['--config.train.batch_size=0'], 'error: config.train.batch_size=0 must be >= 1'),
    (['--config.train.learning_rate=-1'], 'error: config.train.learning_rate=-1.0 must be > 0'),
    (['--config.compression.weight_sparsity=2'],
     'error: config.compression.weight_sparsity=2.0 must be in [0, 1)'),
    (['--config.data.validation_size=0'], 'error: config.data.validation_size=0.0 must be'),
    # Checked before anything is written: the data files and their columns, the storage.
    (['--config.data.train_path=no_such.csv'], 'error: data file not found: no_such.csv'),
    (['--config.data.text_column=review'], "error: data is missing column(s) ['review']"),
    # Settings that the run would ignore (tests/test_unused_settings.py has them all).
    (['--config.data.source=embedded', '--config.data.train_path=reviews.csv'],
     'error: --config.data.train_path has no effect unless --config.data.source=local'),
    (['--workflow=report', '--n_trials=3'],
     'error: --n_trials has no effect with --workflow=report; it is used by --workflow=baseline'),
])
def test_bad_flags_give_one_clear_error_and_write_nothing(tmp_path, flags, message):
  workdir = tmp_path / 'workdir'
  result = launch(f'--workdir={workdir}', '--config=configs/test.py', *flags)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()  # Refused before any work: nothing written.


def spec(tmp_path, workflow, sampler='tpe', n_trials=2):
  return runner.RunSpec(workflow=workflow, sampler=sampler, n_trials=n_trials,
                        workdir=str(tmp_path), storage='', study_name='test')


TRIAL_FIELDS = ('value', 'validation_accuracy', 'test_accuracy', 'test_accuracy_interval',
                'float_test_accuracy', 'n_validation', 'n_test')


def check_accuracy_fields(record, n_validation=60, n_test=100):
  """The fields every trial and `best` carry: the validation objective, the test accuracy
  with its 95% interval, and both sample sizes (tests/test_selection.py recomputes them from a
  saved model, on data where validation and test cannot tie)."""
  assert all(record[key] is not None for key in TRIAL_FIELDS)
  low, high = record['test_accuracy_interval']
  assert low <= record['test_accuracy'] <= high and 0 < high - low < 0.3
  assert (record['n_validation'], record['n_test']) == (n_validation, n_test)
  assert len(record['test_correct']) == n_test
  assert record['test_correct'].count('1') == round(record['test_accuracy'] * n_test)


def test_baseline_search_records_trials_and_resumes_to_the_total(tmp_path, test_config,
                                                                 capsys):
  space = test_config.search.space
  space.num_layers, space.hidden_size, space.intermediate_size = (2,), (128,), (512,)
  space.num_heads = (2, 4, 8)  # A 3-point grid, run to the end in two parts.
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
  assert results['majority_class_accuracy'] == 0.5  # The easy reviews are balanced.
  assert results['search_space']['identity_choices'] is False  # The grid: sizes only.
  assert results['search_space']['grid_points'] == 3
  for t in trials:
    arch = Architecture.from_dict(t['architecture'])
    model = BertClassifier(arch, **json.loads(
        (tmp_path / 'models' / 'test' / f'trial_{t["number"]:04d}' / 'model.json').read_text()
    )['model'])
    import jax  # pylint: disable=g-import-not-at-top
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.numpy.ones((1, 8), 'int32'))
    assert t['n_params'] == count_params(shapes['params'])
    check_accuracy_fields(t)
    for key in ('train_seconds', 'int8_validation_accuracy', 'int8_test_accuracy', 'sparsity',
                'model_bytes', 'float_model_bytes', 'latency_ms_per_example'):
      assert t[key] is not None
    assert 0 < t['compile_seconds'] < t['trial_seconds']
    low, high = t['latency_ms_per_example_iqr']  # 60 validation reviews: 2 batches of 50.
    assert low <= t['latency_ms_per_example'] <= high and t['latency_batch_size'] == 50
    assert t['latency_batches'] >= 32
    assert t['value'] == t['float_validation_accuracy']
    assert t['test_accuracy'] == t['float_test_accuracy']
    assert t['model_bytes'] < t['float_model_bytes'] / 3
  outputs = [tmp_path / name for name in ('results.json', 'summary.md', 'best_so_far.png')]
  written = [path.stat().st_mtime_ns for path in outputs]
  runner.run(spec(tmp_path, 'baseline', sampler='grid', n_trials=3), test_config)
  assert "study 'test' is complete (3 of 3 trials); nothing to run" in capsys.readouterr().out
  assert [path.stat().st_mtime_ns for path in outputs] == written  # Left as they were.
  best = results['best']
  check_accuracy_fields(best)
  assert best['value'] == max(t['value'] for t in trials)
  assert best['test_accuracy'] > 0.9  # The easy reviews are learned.
  post = results['post_compression']
  assert post['trial'] == best['number'] and post['retrained_int8_test_accuracy'] > 0.9
  assert series_drawn(tmp_path / 'best_so_far.png') == 1
  assert results['best_model_dir'] == str(tmp_path / 'best_model' / 'test')
  assert json.loads((tmp_path / 'best_model' / 'test' / 'model.json').read_text())['metrics'][
      'float_test_accuracy'] == best['float_test_accuracy']
  evaluate = lambda: runner.run(runner.RunSpec('evaluate', 'tpe', 1, str(tmp_path), '', 'test',
                                               checkpoint=results['best_model_dir']),
                                test_config)
  evaluated = evaluate()
  assert evaluated['float_test_accuracy'] == pytest.approx(best['float_test_accuracy'], abs=1e-6)
  assert evaluated['int8_test_accuracy'] == pytest.approx(best['int8_test_accuracy'], abs=1e-6)
  # The check has power: the same model with its weights shuffled scores far lower.
  shuffle_float_weights(results['best_model_dir'])
  assert evaluate()['float_test_accuracy'] < best['float_test_accuracy'] - 0.2


def shuffle_float_weights(model_dir):
  """Permutes every saved float weight tensor in place (same shapes, wrong values)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, 'float')
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(path)
  rng = np.random.default_rng(0)
  shuffled = jax.tree.map(lambda x: rng.permutation(np.asarray(x).ravel()).reshape(x.shape),
                          params)
  shutil.rmtree(path)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, shuffled)


def test_samplers_search_one_space_and_repeat(tmp_path, test_config):
  use_noisy_reviews(test_config)  # Models that disagree.
  space = test_config.search.space
  space.num_layers, space.num_heads, space.hidden_size = (2,), (2,), (128,)
  space.intermediate_size = (512, 768)
  results = runner.run(runner.RunSpec('samplers', 'tpe', 2, str(tmp_path), '', 'test',
                                      repeats=2), test_config)
  assert list(results['runs']) == ['grid', 'grid-r1', 'random', 'random-r1', 'tpe', 'tpe-r1']
  for run in results['runs'].values():
    assert run['n_complete'] == 2 and run['search_space']['identity_choices'] is False
    assert run['seed'] == test_config.seed + run['repeat']
    assert not any(name.startswith('layer_') for t in run['trials'] for name in t['params'])
  comparisons = results['comparisons']
  assert len(comparisons) == 6  # 3 pairs of samplers x 2 repeats.
  for c in comparisons:  # The p-value of the counts; none for models that never disagree.
    discordant = c['only_a'] + c['only_b']
    assert c['n_test'] == 100 and (c['p_value'] is None) == (discordant == 0)
    if discordant:
      assert c['p_value'] == pytest.approx(scipy.stats.binomtest(c['only_a'], discordant).pvalue)
  # A repeat is another seed: the same architecture trains from another init, dropout and
  # data order, while runs of one seed train it alike.
  trials = [(run['repeat'], t['params'], t['train_losses'])
            for run in results['runs'].values() for t in run['trials'] if 'train_losses' in t]
  pairs = [(a, b) for i, a in enumerate(trials) for b in trials[i + 1:] if a[1] == b[1]]
  assert any(a[0] != b[0] for a, b in pairs) and any(a[0] == b[0] for a, b in pairs)
  for a, b in pairs:
    assert (a[2] == b[2]) == (a[0] == b[0])
  across = results['across_repeats']
  assert across['repeats'] == [0, 1] and across['conclusion'].startswith('Cannot tell')
  assert series_drawn(tmp_path / 'samplers_best_so_far.png') == 3
  summary = (tmp_path / 'summary.md').read_text()
  assert 'Over repeats' in summary and 'exact McNemar' in summary and '**Cannot tell' in summary
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['runs']['tpe-r1']['study_name'] == 'test-tpe-r1'


def test_workdir_of_another_config_is_refused_untouched(tmp_path, test_config):
  (tmp_path / 'config.json').write_text(json.dumps({'seed': 123}))
  (tmp_path / 'study.db').write_bytes(b'')  # The study of that config.
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(UserError, match='different config'):
    runner.run(spec(tmp_path, 'retrain'), test_config)
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_workdir_holding_only_a_config_is_no_search_run(tmp_path, test_config):
  """A config.json alone is what a refused command of an earlier version left (or a run
  stopped before its first trial began): the next command's config replaces it."""
  (tmp_path / 'config.json').write_text(json.dumps({'seed': 123}))
  runner.check_workdir_config(str(tmp_path), test_config)
  runner.write_workdir_config(str(tmp_path), test_config)
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == test_config.seed
  for name in ('study.db', 'results.json', 'checkpoints', 'models'):
    (tmp_path / name).write_text('')  # Each is part of a search run.
    test_config.seed += 1
    with pytest.raises(UserError, match='holds a search run with a different config'):
      runner.check_workdir_config(str(tmp_path), test_config)
    (tmp_path / name).unlink()


def test_compare_runs_three_workflows_into_one_figure(tmp_path, test_config):
  use_noisy_reviews(test_config)
  # 90% of weights pruned: the compressed models score unlike the float ones, so each
  # workflow's objective can be told from the other form's accuracy.
  test_config.compression.weight_sparsity = 0.9
  test_config.search.space.num_layers = (2,)  # Its 4-layer model stayed at the majority class.
  runner.run(spec(tmp_path, 'compare', n_trials=1), test_config)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert set(results['runs']) == {'baseline', 'compress', 'retrain'}
  for name, run in results['runs'].items():
    (trial,) = run['trials']
    assert trial['state'] == 'COMPLETE'
    assert trial['sparsity'] == pytest.approx(0.9, abs=1e-3)
    check_accuracy_fields(trial)
    check_accuracy_fields(run['best'])
    form, other = ('float', 'int8') if name == 'baseline' else ('int8', 'float')
    assert trial['value'] == trial[f'{form}_validation_accuracy']
    assert trial['value'] != trial[f'{other}_validation_accuracy']
    assert trial['test_accuracy'] == trial[f'{form}_test_accuracy']
  assert len(results['comparisons']) == 3  # Each pair of workflows, on the same test reviews.
  retrained = results['runs']['retrain']['trials'][0]
  assert 'int8_validation_accuracy_before_retrain' in retrained
  assert retrained['resumed_from_step'] == {'float': 0, 'retrain': 0}
  phases = ('train_seconds', 'retrain_seconds', 'eval_seconds')
  assert all(retrained[phase] > 0 for phase in phases)
  assert sum(retrained[phase] for phase in phases) < retrained['trial_seconds']
  assert series_drawn(tmp_path / 'nas_comparison_curve.png') == 3
  summary = (tmp_path / 'summary.md').read_text()
  assert all(f'| {name} | test-{name} |' in summary
             for name in ('baseline', 'compress', 'retrain'))
  assert '| baseline, its best model compressed after the search |' in summary
  assert 'exact McNemar' in summary
