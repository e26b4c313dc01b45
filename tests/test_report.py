"""The HTML report, from a results.json laid out as runner.write_results writes it and a real
SQLite Optuna study (no training)."""

import base64
import html
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import optuna
import pytest

from jaxnas import plots, report, runner, stats
from jaxnas.errors import UserError

SIZES = {'num_layers': (2, 4), 'num_heads': (2, 4, 8, 16), 'hidden_size': (128, 192),
         'intermediate_size': (512, 768)}
IDENTITY_CHOICES = ('layer_0/query', 'layer_1/key', 'pooler')
DISTRIBUTIONS = {
    **{f'{k}_idx': optuna.distributions.IntDistribution(0, len(v) - 1) for k, v in SIZES.items()},
    **{name: optuna.distributions.CategoricalDistribution(('linear', 'identity'))
       for name in IDENTITY_CHOICES}}


def _params(i):
  """Trial i's parameters, drawn at random (seeded by i)."""
  rng = np.random.default_rng(i)
  return {**{name: int(rng.integers(d.high + 1)) for name, d in DISTRIBUTIONS.items()
             if name.endswith('_idx')},
          **{name: str(rng.choice(('linear', 'identity'))) for name in IDENTITY_CHOICES}}


def _record(i, params, workflow):
  """A trial's measurements, as workflows.run_trial and search.run_study record them."""
  arch = {k: SIZES[k][params[f'{k}_idx']] for k in SIZES}
  arch['identity'] = sorted(n for n in IDENTITY_CHOICES if params[n] == 'identity')
  float_bytes = 4 * 250_000 * arch['hidden_size'] // 128 * arch['num_layers']
  # Accuracy is mostly a function of hidden_size: the importances must find it.
  float_accuracy = 0.60 + 0.08 * params['hidden_size_idx'] + 0.0001 * i
  int8_accuracy = float_accuracy - 0.01
  test_accuracy = int8_accuracy if workflow != 'baseline' else float_accuracy
  record = {'architecture': arch, 'n_params': float_bytes // 4, 'train_seconds': 10.0 + i,
            'float_validation_accuracy': float_accuracy, 'int8_validation_accuracy': int8_accuracy,
            'float_test_accuracy': float_accuracy,
            'float_test_accuracy_interval': stats.wilson_interval(round(500 * float_accuracy), 500),
            'test_accuracy': test_accuracy,
            'test_accuracy_interval': stats.wilson_interval(round(500 * test_accuracy), 500),
            'n_validation': 200, 'n_test': 500,
            'sparsity': 0.5, 'model_bytes': float_bytes // 4 + 1000 * i,
            'float_model_bytes': float_bytes, 'resumed_from_step': {'float': 0},
            'model_dir': f'/runs/models/trial_{i:04d}', 'worker': 'host:1'}
  if workflow == 'retrain':
    record['int8_validation_accuracy_before_retrain'] = int8_accuracy - 0.02
  return record


def _study_results(storage, study_name, workflow, num_complete, directions=('maximize',)):
  """Creates the study with `num_complete` trials plus a failed, a pruned and a running one,
  and returns its entry of results.json (the layout of search.study_results)."""
  study = optuna.create_study(storage=storage, study_name=study_name, directions=directions)
  trials = []
  for i in range(num_complete):
    params = _params(i)
    record = _record(i, params, workflow)
    values = [record['int8_validation_accuracy' if workflow != 'baseline'
                     else 'float_validation_accuracy']]
    if len(directions) == 2:
      values.append(record['model_bytes'])
    # The report reads states, params and values from the study, the records from the JSON.
    study.add_trial(optuna.trial.create_trial(params=params, distributions=DISTRIBUTIONS,
                                              values=values))
    trials.append({'number': i, 'state': 'COMPLETE', 'params': params, 'value': values[0],
                   **record})
    if len(values) == 2:
      trials[-1]['values'] = values
  for state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED):
    study.add_trial(optuna.trial.create_trial(params=_params(0), distributions=DISTRIBUTIONS,
                                              state=state))
    trials.append({'number': len(trials), 'state': state.name, 'params': _params(0),
                   'value': None})
  study.ask()  # A trial running now: in the storage, not yet in results.json.
  complete = [t for t in trials if t['state'] == 'COMPLETE']
  single = len(directions) == 1  # Multi-objective: no single best, no best-so-far curve.
  best_so_far = [max(t['value'] for t in complete[:n + 1])
                 for n in range(len(complete))] if single else []
  best = max(complete, key=lambda t: t['value']) if single and complete else None
  return {'workflow': workflow, 'sampler': 'tpe', 'study_name': study_name, 'group': workflow,
          'repeat': 0, 'n_validation': 200, 'n_test': 500, 'majority_class_accuracy': 0.5,
          'validation_majority_class_accuracy': 0.51, 'n_complete': len(complete),
          'best_so_far': best_so_far, 'best': best, 'trials': trials,
          'best_model_dir': f'/runs/best_model/{study_name}', 'label_names': ['neg', 'pos']}


def _write(workdir, results):
  with open(workdir / 'results.json', 'w') as f:
    json.dump(results, f)


def _images(page):
  """The decoded images; each must be an inline PNG."""
  sources = re.findall(r'<img src="([^"]*)"', page)
  assert all(s.startswith('data:image/png;base64,') for s in sources)
  images = [base64.b64decode(s.split(',', 1)[1]) for s in sources]
  assert all(image.startswith(b'\x89PNG\r\n\x1a\n') for image in images)
  return images


def _rows(page, first_cell):
  return re.findall(rf'<tr><td>{re.escape(first_cell)}</td>(.*?)</tr>', page)


def test_single_study_report(tmp_path):
  storage = f'sqlite:///{tmp_path}/study.db'
  results = {**_study_results(storage, 'jaxnas', 'retrain', 40), 'storage': storage}
  _write(tmp_path, results)
  path = report.write_report(str(tmp_path))
  assert path == str(tmp_path / 'report.html')
  page = open(path).read()
  assert not re.search(r'(src|href)="(?!data:)', page)  # Self-contained.
  assert len(_images(page)) == 1  # Best so far; no Pareto front for a single objective.
  assert '40 complete, 1 fail, 1 pruned, 1 running' in page
  assert '--workflow=evaluate --checkpoint=/runs/best_model/jaxnas' in page
  assert 'Classes: neg (0), pos (1).' in page
  best = results['best']
  assert best['architecture']['hidden_size'] == 192
  best_rows = re.findall(r'<tr><td>(\d+)</td><td>(0\.\d{3})</td>', page)
  assert len(best_rows) == report.TOP_K
  assert best_rows[0] == (str(best['number']), f'{best["value"]:.3f}')
  assert [float(v) for _, v in best_rows] == sorted((float(v) for _, v in best_rows),
                                                   reverse=True)
  (row,) = _rows(page, str(best['number']))
  for value in (f'{best["float_validation_accuracy"]:.3f}',
                f'{best["int8_validation_accuracy_before_retrain"]:.3f}',
                stats.interval_text(best, 'test').replace(', ', ',\xa0'),
                f'{best["model_bytes"]:,}',
                f'{best["float_model_bytes"]:,}', '0.500'):
    assert f'<td>{value}</td>' in row
  importances = re.findall(
      r'<tr><td>([\w/]+)</td><td>(\d\.\d{3})</td><td><div class="track"><div class="bar"', page)
  assert importances[0][0] == 'hidden_size'  # Named as sizes, not as sampled indices.
  assert {name for name, _ in importances} == {n.removesuffix('_idx') for n in DISTRIBUTIONS}
  assert math.isclose(sum(float(v) for _, v in importances), 1.0, abs_tol=0.01)


def test_composite_report_with_few_trials_and_a_moved_workdir(tmp_path):
  storage = f'sqlite:///{tmp_path}/study.db'
  runs = {'baseline': _study_results(storage, 'jaxnas-baseline', 'baseline', 1),
          'retrain': _study_results(storage, 'jaxnas-retrain', 'retrain', 3)}
  runs['baseline']['post_compression'] = {
      'trial': 0, 'architecture': runs['baseline']['best']['architecture'],
      'float_validation_accuracy': 0.6, 'int8_validation_accuracy': 0.5812,
      'retrained_int8_validation_accuracy': 0.6234, 'retrained_int8_test_accuracy': 0.61,
      'retrained_int8_test_accuracy_interval': [0.567, 0.652], 'retrained_sparsity': 0.5,
      'retrained_model_bytes': 250_000}
  moved = tmp_path / 'moved'
  moved.mkdir()
  shutil.move(tmp_path / 'study.db', moved / 'study.db')
  # 10 test reviews only the baseline classifies right, 25 only retrain: p = 0.0167.
  for name, only in (('baseline', [1] * 10 + [0] * 25), ('retrain', [0] * 10 + [1] * 25)):
    runs[name]['best']['test_correct'] = stats.pack_correct([1] * 400 + only + [0] * 65)
  _write(moved, {'workflow': 'compare', 'storage': storage, 'runs': runs,
                 'comparisons': runner.paired_comparisons(runs)})
  plots.plot_best_so_far(runs, str(moved / 'nas_comparison_curve.png'), 't')
  plots.plot_pareto([dict(accuracy=0.5, model_bytes=100)], str(moved / 'extra.png'))
  page = open(report.write_report(str(moved))).read()
  assert not (tmp_path / 'study.db').exists()  # The stale URL was not opened (and created).
  assert len(_images(page)) == 2  # Best so far (redrawn) and extra.png.
  assert 'Needs at least 2 completed trials; the study has 1.' in page  # Baseline.
  assert 'indicative only' in page  # Retrain: 3 trials.
  (post,) = _rows(page, '0, compressed after the search')
  assert '<td>0.610 [0.567,\xa00.652] (int8 after QAT)</td>' in post
  assert '<td>0.623</td><td>0.581</td>' in post  # int8 validation after and before QAT.
  assert page.count('1 fail, 1 pruned, 1 running') == 2
  (tested,) = _rows(page, 'baseline (trial 0)')
  assert '<td>10</td><td>25</td><td>0.0167</td><td>0.0167</td><td>differ</td>' in tested


def test_multi_objective_report_lists_the_pareto_front(tmp_path):
  storage = f'sqlite:///{tmp_path}/study.db'
  results = {**_study_results(storage, 'jaxnas', 'compress', 8, ('maximize', 'minimize')),
             'objectives': ['accuracy', 'model_bytes'], 'max_model_bytes': 1_100_000,
             'storage': storage}
  _write(tmp_path, results)
  page = open(report.write_report(str(tmp_path))).read()
  assert len(_images(page)) == 1  # No best-so-far curve: the Pareto front.
  complete = [t for t in results['trials'] if t['state'] == 'COMPLETE']
  feasible = [t for t in complete if t['model_bytes'] <= 1_100_000]
  front = [t['number'] for t in feasible if not any(
      o['value'] >= t['value'] and o['model_bytes'] <= t['model_bytes']
      and o is not t for o in feasible)]
  listed = [int(n) for n in re.findall(r'<tr><td>(\d+)</td><td>0\.\d+, ', page)]
  assert sorted(listed) == sorted(front) and front
  assert f'{len(front)} of 8 completed trials are on the front under the limit of 1,100,000' in page
  assert re.search(r'<tr><td>hidden_size</td>', page)


def test_plot_pareto_returns_the_feasible_front(tmp_path):
  points = [dict(accuracy=0.70, model_bytes=300), dict(accuracy=0.72, model_bytes=500),
            dict(accuracy=0.69, model_bytes=400),  # Dominated by the first.
            dict(accuracy=0.70, model_bytes=300),  # Equal to the first: not dominated.
            dict(accuracy=0.80, model_bytes=900, number=4)]  # Best, but over the limit.
  path = tmp_path / 'pareto.png'
  assert plots.plot_pareto(points, str(path)) == [0, 3, 1, 4]
  assert plots.plot_pareto(points, str(path), max_model_bytes=800) == [0, 3, 1]
  assert path.read_bytes().startswith(b'\x89PNG')


def test_missing_results_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='no .*results.json'):
    report.write_report(str(tmp_path))


CHROMIUM = shutil.which('chromium')
MEASURE = """<script>window.addEventListener('load', () => {
  const widths = sel => [...document.querySelectorAll(sel)].map(
      e => e.getBoundingClientRect().width);
  const out = document.createElement('pre');
  out.id = 'measured';
  const body = document.body.getBoundingClientRect(), style = getComputedStyle(document.body);
  out.textContent = JSON.stringify({bars: widths('.bar'), images: [...document.images].map(
      i => i.naturalWidth), table: widths('table'),
      page: [document.documentElement.clientWidth, document.documentElement.scrollWidth],
      text: [body.left + parseFloat(style.paddingLeft),
             body.right - parseFloat(style.paddingRight)],
      tables: [...document.querySelectorAll('table')].map(e => e.getBoundingClientRect().right)});
  document.body.appendChild(out);
});</script></body>"""
# The architectures of the lab's space that make the widest rows: many identity layers, and
# the sizes of its largest models.
WIDE_ARCHITECTURE = {
    'num_layers': 8, 'num_heads': 16, 'hidden_size': 512, 'intermediate_size': 2048,
    'identity': [f'layer_{i}/{name}' for i in range(4)
                 for name in ('query', 'key', 'value', 'attention_output')] + ['pooler']}


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get('JAXNAS_REQUIRE_CHROMIUM'),
                    reason="headless Chromium not installed (Debian's chromium; .ci/run has it)")
def test_report_in_a_real_browser_shows_bars_and_images(tmp_path):
  """What a person sees on a laptop's 1280 pixels: every importance bar has a width, every
  image decodes, and the tables fit between the page's margins (no horizontal scrolling)."""
  assert CHROMIUM, 'JAXNAS_REQUIRE_CHROMIUM is set but chromium is not installed'
  storage = f'sqlite:///{tmp_path}/study.db'
  results = _study_results(storage, 'jaxnas', 'retrain', 12)
  for trial in results['trials']:
    if trial['state'] == 'COMPLETE':
      trial.update(architecture=WIDE_ARCHITECTURE, n_params=40_123_456,
                   float_model_bytes=160_493_824, model_bytes=41_234_567, train_seconds=1234.5)
  _write(tmp_path, {**results, 'storage': storage})
  page = open(report.write_report(str(tmp_path))).read()
  probe = tmp_path / 'measured.html'
  probe.write_text(page.replace('</body>', MEASURE))
  dom = subprocess.run(
      [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
       '--no-first-run', '--disable-background-networking', '--disable-component-update',
       '--disable-sync', f'--user-data-dir={tmp_path / "profile"}', '--window-size=1280,900',
       '--virtual-time-budget=5000', '--dump-dom', probe.as_uri()],
      capture_output=True, text=True, timeout=120, check=True).stdout
  measured = json.loads(html.unescape(re.search(r'<pre id="measured">(.*?)</pre>', dom).group(1)))
  assert len(measured['bars']) == len(DISTRIBUTIONS)  # One per searched parameter.
  assert all(width > 0 for width in measured['bars'])
  assert max(measured['bars']) > 100  # The most important parameter's bar: 12em wide.
  assert measured['images'] and all(width > 0 for width in measured['images'])
  width, scrolled = measured['page']
  left, right = measured['text']
  assert scrolled <= width  # Nothing wider than the window.
  assert left >= 24 and width - right >= 24  # Margins on both sides.
  assert all(table_right <= right + 1 for table_right in measured['tables']), measured
