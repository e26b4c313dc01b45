"""One self-contained HTML report of a search, finished or still running.

It reads `<workdir>/results.json` (either layout of `runner.write_results`: one study flat, or
one entry per study under 'runs') and, for parameter importances and the trials running now,
each study in its Optuna storage. The best-so-far curves and the Pareto front are drawn anew
from these data, so a running search gets current figures; any other PNG in the workdir is
embedded as it is. Images are inline base64, so the file can be mailed or archived alone.
"""

import base64
import collections
import datetime
import html
import json
import os
import tempfile
import warnings

import optuna

from jaxnas import plots, stats, summary
from jaxnas.errors import UserError

REPORT_FILE = 'report.html'
RESULTS_FILE = 'results.json'
# The runner's best-so-far figures: drawn anew here, so not embedded a second time.
REDRAWN_FIGURES = ('best_so_far.png', 'samplers_best_so_far.png', 'nas_comparison_curve.png')
TOP_K = 5  # Best architectures listed per single-objective study.
OBJECTIVES = {name: f'validation accuracy, {form}' for name, form in plots.OBJECTIVE_FORMS.items()}
# PED-ANOVA (Optuna's default evaluator) compares the top 10% of trials with all of them.
FEW_TRIALS_FOR_IMPORTANCE = 10
# Fits a laptop screen (1280 px) without horizontal scrolling: the page keeps margins, and a
# wide table wraps its cells (an interval after its value, a list of layers) rather than
# overflow; numbers, which have no spaces, stay whole.
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1240px; margin: 2em auto;
       padding: 0 1.5em; box-sizing: border-box; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.4em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; font-size: 0.85em; min-width: 8em; overflow-wrap: anywhere; }
.track { width: 12em; }
.bar { background: #4c78a8; height: 0.8em; min-width: 2px; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; }
"""


def write_report(workdir: str) -> str:
  """Writes `<workdir>/report.html` and returns its path."""
  results = load_results(workdir)
  runs = study_runs(results)
  storage = storage_url(results.get('storage', ''), workdir)
  studies = {name: load_study(storage, run.get('study_name', '')) for name, run in runs.items()}
  body = [f'<h1>jaxnas search report: {html.escape(results.get("workflow", "?"))}</h1>',
          _paragraph(f'workdir {os.path.abspath(workdir)}; storage {storage or "unavailable"}; '
                     f'written {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.'
                     + _classes(runs) + _compression(runs)),
          '<h2>Studies</h2>', studies_table(runs, studies)]
  if any(run.get('best_so_far') for run in runs.values()):
    body += ['<h2>Validation accuracy per trial and best so far</h2>',
             _paragraph('Completed trials in trial order (pruned, failed and running trials '
                        'are not drawn), with 95% intervals; the best trial\'s test accuracy '
                        'is drawn at the right of its curve.'),
             _image(_draw(lambda path: plots.plot_best_so_far(
                 runs, path, 'Validation accuracy and best so far'))[0], 'best so far')]
  for name, run in runs.items():
    body += [f'<h2>Study {html.escape(name)}</h2>', *run_sections(run),
             '<h3>Parameter importances</h3>', importances_section(studies[name])]
  body += comparisons_section(results)
  body += other_figures(workdir)
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>jaxnas report</title>'
          f'<style>{STYLE}</style></head><body>\n' + '\n'.join(body) + '\n</body></html>\n')
  path = os.path.join(workdir, REPORT_FILE)
  with open(path, 'w') as f:
    f.write(page)
  return path


def _classes(runs: dict) -> str:
  """' Classes: neg (0), pos (1).' from the data's label names, if recorded."""
  names = next(iter(runs.values()), {}).get('label_names')
  if not names:
    return ''
  return ' Classes: ' + ', '.join(f'{name} ({i})' for i, name in enumerate(names)) + '.'


def _compression(runs: dict) -> str:
  """' Compression: Q4.4 fixed point ...' (summary.compression_text), if recorded."""
  compression = next(iter(runs.values()), {}).get('compression')
  return f' Compression: {summary.compression_text(compression)}.' if compression else ''


def load_results(workdir: str) -> dict:
  path = os.path.join(workdir, RESULTS_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserError(f'no {path}: a search writes it when its first trial completes') from None
  except ValueError as e:
    raise UserError(f'{path} is not valid JSON: {e}') from None


def study_runs(results: dict) -> dict:
  """Study name -> its results, for both layouts of results.json."""
  if 'runs' in results:
    return results['runs']
  return {results.get('workflow', 'study'): results}


def storage_url(url: str, workdir: str) -> str:
  """The study storage, or '' when there is none to read.

  A SQLite file that no longer exists is looked for in the workdir (a workdir that was moved),
  and never created: opening a missing SQLite URL would make an empty database.
  """
  if not url.startswith('sqlite:///'):
    return url
  if os.path.exists(url.removeprefix('sqlite:///')):
    return url
  local = os.path.join(os.path.abspath(workdir), 'study.db')
  return f'sqlite:///{local}' if os.path.exists(local) else ''


def load_study(storage: str, study_name: str) -> optuna.Study | None:
  if not storage or not study_name:
    return None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  try:
    return optuna.load_study(study_name=study_name, storage=storage)
  except Exception:  # pylint: disable=broad-except  # Unreachable or unknown: report without.
    return None


def completed_trials(run: dict) -> list[dict]:
  return [t for t in run.get('trials', ()) if t.get('state') == 'COMPLETE']


def is_multi_objective(run: dict) -> bool:
  return len(run.get('objectives', ())) > 1 or 'pareto_front' in run


def studies_table(runs: dict, studies: dict) -> str:
  """Trial counts per state: from the storage when it can be read (current), else from
  results.json (as of the last completed trial)."""
  rows = []
  for name, run in runs.items():
    study = studies[name]
    if study is not None:
      states = collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))
    else:
      states = collections.Counter(t.get('state', '?') for t in run.get('trials', ()))
    counts = ', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))
    best = run.get('best') or {}
    objective = ', '.join([OBJECTIVES.get(run.get('workflow'), 'accuracy')]
                          + list(run.get('objectives', ()))[1:])
    rows.append([name, run.get('workflow', ''), objective, run.get('sampler', ''),
                 run.get('study_name', ''), counts or 'none', _objective(best),
                 _interval(best, 'test'),
                 f'{run.get("n_validation", "?")} / {run.get("n_test", "?")}',
                 _number(run.get('majority_class_accuracy'), '.3f')])
  return _table(['study', 'workflow', 'objective', 'sampler', 'Optuna study', 'trials',
                 'best objective', 'best trial: test [95% interval]',
                 'validation / test reviews', 'majority class (test)'], rows)


def run_sections(run: dict) -> list[str]:
  """The best architectures of one study (the Pareto front if it is multi-objective)."""
  trials = completed_trials(run)
  if not trials:
    return [_paragraph('No completed trial yet.')]
  sections = []
  if run.get('best') and run.get('best_model_dir'):
    sections.append(_paragraph(
        f'Best model (trial {run["best"]["number"]}): {run["best_model_dir"]}; reload it with '
        f'python launch.py --workflow=evaluate --checkpoint={run["best_model_dir"]}'))
  if is_multi_objective(run):
    points = [dict(accuracy=t['value'], model_bytes=t['model_bytes'],
                   number=t['number']) for t in trials]
    limit = run.get('max_model_bytes')
    uri, front = _draw(lambda path: plots.plot_pareto(
        points, path, max_model_bytes=limit, n_validation=run.get('n_validation'),
        majority=run.get('validation_majority_class_accuracy')))
    sections += ['<h3>Pareto front: validation accuracy vs int8 size</h3>',
                 _paragraph(f'{len(front)} of {len(trials)} completed trials are on the front'
                            + (f' under the limit of {limit:,} bytes' if limit else '') +
                            '; dominated trials are dimmed.'),
                 _image(uri, 'Pareto front'), '<h3>Architectures on the front</h3>']
    best = [trials[i] for i in front]
  else:
    best = sorted(trials, key=lambda t: (-t['value'], t['number']))[:TOP_K]
    sections.append(f'<h3>Best architectures (top {len(best)} of {len(trials)} completed)</h3>')
  sections.append(architecture_table(best, run.get('post_compression')))
  return sections


def architecture_table(trials: list[dict], post_compression: dict | None) -> str:
  headers = ['trial', 'objective (validation)', 'test [95% interval]', 'L/H/d/ff',
             'identity layers', 'params', 'float: validation', 'float: test',
             'int8: validation', 'int8 before QAT: validation', 'sparsity', 'int8 bytes',
             'float bytes', 'train s']
  rows = []
  for t in trials:
    arch = t['architecture']
    rows.append([t['number'], _objective(t), _interval(t, 'test'), _shape(arch),
                 _identity(arch), _number(t.get('n_params'), ','),
                 _number(t.get('float_validation_accuracy'), '.3f'),
                 _interval(t, 'float_test'),
                 _number(t.get('int8_validation_accuracy'), '.3f'),
                 _number(t.get('int8_validation_accuracy_before_retrain'), '.3f'),
                 _number(t.get('sparsity'), '.3f'), _number(t.get('model_bytes'), ','),
                 _number(t.get('float_model_bytes'), ','), _number(t.get('train_seconds'), '.1f')])
  if post_compression:
    p = post_compression
    rows.append([f'{p["trial"]}, compressed after the search', '-',
                 _interval(p, 'retrained_int8_test') + ' (int8 after QAT)',
                 _shape(p['architecture']), _identity(p['architecture']), '',
                 _number(p.get('float_validation_accuracy'), '.3f'),
                 _interval(p, 'float_test'),
                 _number(p.get('retrained_int8_validation_accuracy'), '.3f'),
                 _number(p.get('int8_validation_accuracy'), '.3f'),
                 _number(p.get('retrained_sparsity'), '.3f'),
                 _number(p.get('retrained_model_bytes'), ','), '', ''])
  used = [i for i in range(len(headers)) if any(row[i] != '' for row in rows)]
  return _table([headers[i] for i in used], [[row[i] for i in used] for row in rows],
                text_columns=('identity layers',))


def param_importances(study: optuna.Study) -> tuple[dict | None, str]:
  """(importances, note); importances is None when they cannot be estimated."""
  n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
  if n < 2:
    return None, f'Needs at least 2 completed trials; the study has {n}.'
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as e:
      return None, f'Optuna could not estimate importances: {e}'
  equal = [w for w in caught if 'will be equal' in str(w.message)]
  if equal:
    return None, f'Optuna could not tell the parameters apart: {equal[0].message}'
  note = f'PED-ANOVA (Optuna\'s default) over {n} completed trials.'
  if n < FEW_TRIALS_FOR_IMPORTANCE:
    note += (f' With fewer than {FEW_TRIALS_FOR_IMPORTANCE} trials the top 10% is a single '
             'trial, so these are indicative only.')
  return importances, note


def importances_section(study: optuna.Study | None) -> str:
  if study is None:
    return _paragraph('The study could not be read from its storage.')
  importances, note = param_importances(study)
  if importances is None:
    return _paragraph(note)
  fixed = _fixed_params(study)
  importances = {name: value for name, value in importances.items() if name not in fixed}
  top = max(importances.values()) or 1.0
  rows = [[name.removesuffix('_idx'), f'{value:.3f}',
           f'<div class="track"><div class="bar" style="width:{100 * value / top:.0f}%">'
           '</div></div>'] for name, value in importances.items()]
  return _paragraph(note) + _table(['parameter', 'importance', ''], rows, escape=False)


def comparisons_section(results: dict) -> list[str]:
  """The tests between the studies: across seeds (runner.across_repeats) and between the best
  models of each repeat (runner.paired_comparisons)."""
  comparisons, across = results.get('comparisons', []), results.get('across_repeats')
  if not comparisons:
    return []
  section = ['<h2>Is the difference real?</h2>']
  if across:
    rows = [[group, *(f'{a:.3f}' for a in across['test_accuracies'][group]),
             f'{across["mean_ranks"][group]:.2f}'] for group in across['groups']]
    section += [
        '<h3>Across seeds: the searches</h3>',
        _paragraph(f'{across["test"]} on the best trials\' test accuracies, paired by seed '
                   f'(rank 1: the best group of a seed): statistic {across["statistic"]:.3g}, '
                   f'p = {across["p_value"]:.3g}; with {across["seeds"]} seeds the smallest '
                   f'attainable p is {across["smallest_attainable_p"]:.3g} (when no two '
                   'groups tie on a seed).'),
        _table(['group', *(f'repeat {r}' for r in across['repeats']), 'mean rank'], rows)]
    if across['pairs']:
      section.append(_table(['a', 'b', 'Nemenyi p', 'differ'], [
          [c['a'], c['b'], f'{c["p_value"]:.3g}', 'yes' if c['significant'] else 'no']
          for c in across['pairs']]))
    section.append(f'<p><b>{html.escape(across["conclusion"])}</b></p>')
  rows = [[f'{c["a"]} (trial {c["a_trial"]})', f'{c["b"]} (trial {c["b_trial"]})', c['repeat'],
           f'{c["a_test_accuracy"]:.3f}', f'{c["b_test_accuracy"]:.3f}', c['only_a'],
           c['only_b'], _number(c['p_value'], '.3g') or '-',
           # A results.json from before Holm's correction has neither: '-' and an empty verdict.
           _number(c.get('p_holm'), '.3g') or '-', c.get('verdict', '')] for c in comparisons]
  tested = sum(c['p_value'] is not None for c in comparisons)
  return section + [
      '<h3>Paired tests of the best models</h3>',
      _paragraph(f'Exact McNemar tests on the same {comparisons[0]["n_test"]} test reviews: '
                 '"only a" counts reviews that a classifies right and b wrong. Each compares two '
                 'trained models, one seed each, not their searches. "differ": Holm-adjusted '
                 f'p < 0.05 over the {tested} tests; "no evidence of a difference" is not '
                 'evidence that they are equally accurate. Models that classify every review '
                 'alike are not tested.'),
      _table(['a', 'b', 'repeat', 'test a', 'test b', 'only a', 'only b', 'p', 'p (Holm)',
              'verdict'], rows)]


def _fixed_params(study: optuna.Study) -> set[str]:
  """Parameters with a single option (fixed by the config): nothing to attribute to them."""
  fixed = set()
  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
    for name, distribution in trial.distributions.items():
      if distribution.single():
        fixed.add(name)
  return fixed


def other_figures(workdir: str) -> list[str]:
  names = sorted(n for n in os.listdir(workdir)
                 if n.endswith('.png') and n not in REDRAWN_FIGURES)
  if not names:
    return []
  sections = ['<h2>Other figures in the workdir</h2>']
  for name in names:
    with open(os.path.join(workdir, name), 'rb') as f:
      sections += [f'<h3>{html.escape(name)}</h3>', _image(_png_uri(f.read()), name)]
  return sections


def _draw(draw) -> tuple[str, object]:
  """Runs `draw(path)` on a temporary PNG file: (the image as a data URI, what draw returned)."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'figure.png')
    returned = draw(path)
    with open(path, 'rb') as f:
      return _png_uri(f.read()), returned


def _png_uri(data: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(data).decode('ascii')


def _image(uri: str, alt: str) -> str:
  return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _paragraph(text: str) -> str:
  return f'<p class="note">{html.escape(text)}</p>'


def _table(headers: list, rows: list, escape: bool = True, text_columns=()) -> str:
  """An HTML table; cells of the columns named in `text_columns` are set as text (left
  aligned, small, wrapping), the others as numbers."""
  cell = lambda v: html.escape(str(v)) if escape else str(v)
  text = [header in text_columns for header in headers]
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in headers)
  body = ''.join('<tr>' + ''.join(f'<td class="text">{cell(v)}</td>' if is_text
                                  else f'<td>{cell(v)}</td>' for v, is_text in zip(row, text))
                 + '</tr>' for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _interval(record: dict, key: str) -> str:
  """stats.interval_text, its interval kept on one line: a narrow cell wraps it after the
  value."""
  return stats.interval_text(record, key).replace(', ', ',\u00a0')


def _number(value, spec: str) -> str:
  return '' if value is None else format(value, spec)


def _objective(trial: dict) -> str:
  """The accuracy to 3 decimals, then any size or latency objective."""
  values = trial.get('values') or [trial.get('value')]
  if values[0] is None:
    return ''
  return ', '.join([format(values[0], '.3f')] + [format(v, '.4g') for v in values[1:]])


def _shape(arch: dict) -> str:
  return (f'{arch["num_layers"]}/{arch["num_heads"]}/{arch["hidden_size"]}/'
          f'{arch["intermediate_size"]}')


def _identity(arch: dict) -> str:
  """'3: layer_0 (key, value), pooler': the Identity layers by Transformer layer, short
  enough for a narrow cell."""
  layers = collections.defaultdict(list)
  for name in arch['identity']:
    layer, _, dense = name.rpartition('/')
    layers[layer].append(dense)
  names = ', '.join(f'{layer} ({", ".join(denses)})' if layer else ', '.join(denses)
                    for layer, denses in layers.items())
  return f'{len(arch["identity"])}: {names}' if arch['identity'] else '0'
