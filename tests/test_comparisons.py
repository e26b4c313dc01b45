"""The significance rules of a composite run (runner.paired_comparisons, runner.across_repeats)
and how summary.md and the report state them, on synthetic results (no training)."""

import re

import numpy as np
import pytest
import scipy.stats

from jaxnas import report, runner, stats, summary

ARCH = {'num_layers': 2, 'num_heads': 4, 'hidden_size': 128, 'intermediate_size': 512,
        'identity': []}


def _correct(only_a, only_b, both=50, neither=30):
  """Two models' correctness on the reviews of a 2x2 table."""
  a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
  b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
  return np.array(a, bool), np.array(b, bool)


def _run(group, repeat, correct, architecture=ARCH, number=0):
  """A study's entry of results.json with the fields summary.md reads."""
  accuracy = float(np.mean(correct))
  interval = stats.wilson_interval(int(correct.sum()), len(correct))
  best = {'number': number, 'validation_accuracy': accuracy, 'test_accuracy': accuracy,
          'test_accuracy_interval': interval, 'float_test_accuracy': accuracy,
          'float_test_accuracy_interval': interval, 'n_test': len(correct),
          'test_correct': stats.pack_correct(correct), 'architecture': architecture,
          'sparsity': 0.0, 'model_bytes': 1000, 'float_model_bytes': 4000}
  return {'workflow': 'baseline', 'study_name': f'test-{group}-r{repeat}', 'seed': repeat,
          'group': group, 'repeat': repeat, 'n_validation': 60, 'n_test': len(correct),
          'majority_class_accuracy': 0.5, 'best': best}


def _results(runs, workflow='samplers'):
  return {'workflow': workflow, 'runs': runs,
          'comparisons': runner.paired_comparisons(runs),
          'across_repeats': runner.across_repeats(runs, workflow)}


def test_holm_corrects_over_the_run_and_keeps_the_raw_p():
  # Two groups, three repeats, one test each: 14 vs 4 discordant twice (p = 0.031 each, below
  # 0.05 alone), 5 vs 5 once. Holm over the 3 tests: 3 x 0.031 = 0.093, so nothing differs.
  tables = [(14, 4), (14, 4), (5, 5)]
  runs = {}
  for repeat, (only_a, only_b) in enumerate(tables):
    a, b = _correct(only_a, only_b)
    runs[f'grid-r{repeat}'] = _run('grid', repeat, a)
    runs[f'tpe-r{repeat}'] = _run('tpe', repeat, b, {**ARCH, 'num_heads': 2})
  comparisons = runner.paired_comparisons(runs)
  raw = [scipy.stats.binomtest(only_b, only_a + only_b).pvalue for only_a, only_b in tables]
  assert [c['p_value'] for c in comparisons] == pytest.approx(raw)
  assert raw[0] < 0.05
  assert [c['p_holm'] for c in comparisons] == pytest.approx([3 * raw[0], 3 * raw[0], 1.0])
  assert not any(c['significant'] for c in comparisons)
  assert {c['verdict'] for c in comparisons} == {'no evidence of a difference'}


def test_same_model_is_labelled_and_left_out_of_the_correction():
  grid, random = _correct(15, 4)  # p = 0.019; Holm over 2 tests 0.038, over 3 it would be 0.058.
  runs = {'grid': _run('grid', 0, grid), 'random': _run('random', 0, random, number=1),
          'tpe': _run('tpe', 0, random.copy(), number=1)}
  by_pair = {(c['a'], c['b']): c for c in runner.paired_comparisons(runs)}
  same = by_pair['random', 'tpe']
  assert (same['verdict'], same['p_value'], same['p_holm'], same['significant']) == (
      'same model', None, None, False)
  p = scipy.stats.binomtest(4, 19).pvalue
  for pair in (('grid', 'random'), ('grid', 'tpe')):
    assert by_pair[pair]['p_holm'] == pytest.approx(2 * p)
    assert by_pair[pair]['significant'] and by_pair[pair]['verdict'] == 'differ'
  runs['tpe']['best']['architecture'] = {**ARCH, 'hidden_size': 192}
  by_pair = {(c['a'], c['b']): c for c in runner.paired_comparisons(runs)}
  assert by_pair['random', 'tpe']['verdict'] == 'same predictions'


def _accuracy_runs(table):
  """Runs of three samplers whose best models score `table[group][repeat]` on 100 reviews."""
  runs = {}
  for group, accuracies in table.items():
    for repeat, accuracy in enumerate(accuracies):
      if accuracy is not None:
        correct = np.arange(100) < round(100 * accuracy)
        runs[f'{group}-r{repeat}'] = _run(group, repeat, correct)
  return runs


def test_across_repeats_pairs_by_seed_and_says_what_it_can_tell():
  agree = {'grid': [0.85, 0.84, 0.86], 'random': [0.80, 0.81, 0.82],
           'tpe': [0.75, 0.76, 0.77]}
  result = runner.across_repeats(_accuracy_runs(agree), 'samplers')
  assert result['p_value'] == pytest.approx(1 / 36) and result['significant']
  assert result['conclusion'].startswith('The groups differ across 3 seeds')
  assert 'grid vs tpe' in result['conclusion'] and 'grid vs random' not in result['conclusion']
  # Two seeds: p = 1/6 is the best any outcome can give; the wording says so and names the
  # command with enough repeats, rather than "no difference".
  two = runner.across_repeats(_accuracy_runs({g: a[:2] for g, a in agree.items()}), 'samplers')
  assert two['p_value'] == pytest.approx(1 / 6)
  assert two['conclusion'].startswith('Cannot tell: with 2 seeds of 3 groups')
  assert 'python launch.py --workflow=samplers --repeats=3' in two['conclusion']
  # Seeds disagree: a reachable level not reached is absence of evidence.
  mixed = runner.across_repeats(_accuracy_runs(
      {'grid': [0.85, 0.80, 0.75], 'random': [0.80, 0.85, 0.80], 'tpe': [0.75, 0.75, 0.85]}),
      'compare')
  assert not mixed['significant'] and mixed['conclusion'].startswith('No evidence of a difference')
  assert 'python launch.py --workflow=compare --repeats=6' in mixed['conclusion']
  # A repeat with a group lacking a best model is left out: tests pair by seed.
  gap = runner.across_repeats(_accuracy_runs({**agree, 'tpe': [0.75, None, 0.77]}), 'samplers')
  assert gap['repeats'] == [0, 2] and gap['test_accuracies']['grid'] == [0.85, 0.86]
  assert runner.across_repeats(_accuracy_runs({g: a[:1] for g, a in agree.items()}),
                               'samplers') is None
  # Every seed ties every group (the easy test reviews, all right): more seeds cannot help.
  tied = runner.across_repeats(_accuracy_runs({g: [1.0] * 3 for g in agree}), 'samplers')
  assert tied['p_value'] == 1.0
  assert tied['conclusion'].startswith('Cannot tell: on every seed the groups\' best models')


def _cells(markdown, first):
  (row,) = [line for line in markdown.splitlines() if line.startswith(f'| {first}')]
  return [cell.strip() for cell in row.strip('|').split('|')]


def test_summary_and_report_state_the_tests():
  grid, random = _correct(15, 4)
  runs = {}
  for repeat in range(2):
    runs[f'grid-r{repeat}'] = _run('grid', repeat, grid)
    runs[f'random-r{repeat}'] = _run('random', repeat, random)
    runs[f'tpe-r{repeat}'] = _run('tpe', repeat, random.copy())
  results = _results(runs)
  text = summary.summary_markdown(results)
  p, p_holm = scipy.stats.binomtest(4, 19).pvalue, 4 * scipy.stats.binomtest(4, 19).pvalue
  assert _cells(text, 'grid-r1 (trial 0) | random-r1')[7:] == [
      f'{p:.3g}', f'{p_holm:.3g}', 'no evidence of a difference']  # 4 tests: 0.077.
  assert _cells(text, 'random-r1 (trial 0) | tpe-r1')[7:] == ['-', '-', 'same model']
  assert _cells(text, 'grid | 0.') == ['grid', f'{grid.mean():.3f}', f'{grid.mean():.3f}',
                                      '1.00']
  assert 'With 2 seeds the smallest attainable p is 0.167 (when' in text
  assert '**Cannot tell: with 2 seeds of 3 groups' in text
  page = '\n'.join(report.comparisons_section(results))
  assert re.search(rf'<td>{p:.3g}</td><td>{p_holm:.3g}</td><td>no evidence of a difference',
                   page)
  assert '<td>-</td><td>-</td><td>same model</td>' in page
  assert '<b>Cannot tell: with 2 seeds of 3 groups' in page
  assert (f'<tr><td>grid</td><td>{grid.mean():.3f}</td><td>{grid.mean():.3f}</td><td>1.00</td>'
          '</tr>') in page


def test_report_reads_comparisons_from_before_holm():
  old = {'a': 'baseline', 'b': 'retrain', 'repeat': 0, 'a_trial': 0, 'b_trial': 2,
         'a_test_accuracy': 0.8, 'b_test_accuracy': 0.83, 'n_test': 500, 'only_a': 10,
         'only_b': 25, 'p_value': 0.0167, 'significant': True}
  page = '\n'.join(report.comparisons_section({'comparisons': [old]}))
  assert '<td>0.0167</td><td>-</td><td></td></tr>' in page
