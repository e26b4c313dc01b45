"""Figures: validation accuracy vs trial with the best so far (one curve per sampler or per
workflow, or their mean over repeats), and accuracy vs model size with its Pareto front.

Every accuracy is drawn with its 95% interval (error bars or a band) and beside the
majority-class rate, so that a reader sees which differences are inside the noise.
"""

import matplotlib

matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top

import numpy as np  # pylint: disable=g-import-not-at-top

from jaxnas import objectives, stats  # pylint: disable=g-import-not-at-top

# The accuracy each workflow's studies select on (on the validation split).
OBJECTIVE_FORMS = {'baseline': 'float model', 'compress': 'served int8, pruned',
                   'retrain': 'served int8, pruned, after QAT'}


def plot_best_so_far(runs: dict, path: str, title: str):
  """Validation accuracy of every completed trial and the best so far, per group of studies.

  `runs` are study results (results.json's `runs`, keyed by name) with `group` and `repeat`.
  A group with one study shows each trial as a point with its 95% Wilson interval, the best
  so far as a step line, and the best trial's test accuracy with its interval at the right.
  A group with several repeats shows the mean best so far over the repeats, per completed
  trial, with a min-max band.
  """
  groups = {}
  for run in runs.values():
    groups.setdefault(run.get('group', run.get('workflow')), []).append(run)
  forms = {OBJECTIVE_FORMS.get(run['workflow'], run['workflow']) for run in runs.values()}
  fig, ax = plt.subplots(figsize=(11, 5))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  repeated = any(len(members) > 1 for members in groups.values())
  for i, ((group, members), color) in enumerate(zip(groups.items(), colors)):
    form = OBJECTIVE_FORMS.get(members[0]['workflow'], members[0]['workflow'])
    label = group if len(forms) == 1 else f'{group} ({form})'
    offset = 0.08 * (i - (len(groups) - 1) / 2)  # Side by side where trials coincide.
    if repeated:
      _draw_repeats(ax, label, members, color)
    else:
      _draw_study(ax, label, members[0], color, offset)
  first = next(iter(runs.values()))
  if first.get('validation_majority_class_accuracy') is not None:
    ax.axhline(first['validation_majority_class_accuracy'], color='gray', linestyle=':',
               label='majority class (validation)')
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ylabel = (f'accuracy ({forms.pop()})' if len(forms) == 1
            else 'accuracy (each study\'s objective)')
  _save(fig, ax, path, 'completed trial (mean over repeats)' if repeated else 'trial number',
        ylabel, title)


def _draw_study(ax, label: str, run: dict, color, offset: float = 0.0):
  trials = sorted((t for t in run['trials'] if t['state'] == 'COMPLETE'),
                  key=lambda t: t['number'])
  if not trials:
    return
  n = run['n_validation']
  numbers = np.array([t['number'] for t in trials]) + offset
  values = np.array([t['value'] for t in trials])
  low, high = np.array([stats.wilson_interval(round(v * n), n) for v in values]).T
  ax.errorbar(numbers, values, yerr=[values - low, high - values], fmt='o', color=color,
              alpha=0.45, markersize=4, capsize=2,
              label=f'{label}: each trial, validation (n={n}, 95% interval)')
  ax.step(numbers, run['best_so_far'], where='post', color=color,
          label=f'{label}: best so far, validation')
  best = run.get('best')
  if best and best.get('test_accuracy') is not None:
    x = numbers[-1] + 0.3
    low, high = best['test_accuracy_interval']
    ax.errorbar([x], [best['test_accuracy']], yerr=[[best['test_accuracy'] - low],
                                                   [high - best['test_accuracy']]],
                fmt='D', color=color, capsize=3, markersize=5,
                label=f'{label}: best trial ({best["number"]}), test (n={best["n_test"]})')


def _draw_repeats(ax, label: str, members: list, color):
  curves = [np.array(run['best_so_far'], float) for run in members if run['best_so_far']]
  if not curves:
    return
  length = min(len(curve) for curve in curves)
  stacked = np.stack([curve[:length] for curve in curves])
  x = np.arange(1, length + 1)
  for curve in stacked:
    ax.step(x, curve, where='post', color=color, alpha=0.25, linewidth=0.8)
  ax.fill_between(x, stacked.min(0), stacked.max(0), step='post', color=color, alpha=0.15)
  ax.step(x, stacked.mean(0), where='post', color=color, linewidth=2,
          label=f'{label}: best so far, validation: mean of {len(curves)} repeats '
                '(band: min-max)')


def _save(fig, ax, path: str, xlabel: str, ylabel: str, title: str):
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_pareto(points, path: str, title: str = 'Accuracy vs int8 model size',
                max_model_bytes: int | None = None, n_validation: int | None = None,
                majority: float | None = None) -> list[int]:
  """Accuracy vs model bytes, one marker per trial; returns the indices of the front.

  `points` are dicts with 'accuracy' and 'model_bytes' (and optionally 'number', the trial
  number, used as a label). A point is on the front when no other feasible point is at least
  as accurate and at most as large, and strictly better in one of the two. Dominated points
  are dimmed; with `max_model_bytes`, larger points are infeasible: drawn as crosses, never on
  the front, and the limit is a dashed line. `n_validation`: the accuracies' sample size,
  for 95% error bars; `majority`: the majority-class rate, drawn as a reference line.
  """
  feasible = [i for i, p in enumerate(points)
              if max_model_bytes is None or p['model_bytes'] <= max_model_bytes]
  front = [feasible[i] for i in objectives.non_dominated(
      [(points[i]['accuracy'], -points[i]['model_bytes']) for i in feasible])]
  front.sort(key=lambda i: points[i]['model_bytes'])
  dominated = [i for i in feasible if i not in front]
  infeasible = [i for i in range(len(points)) if i not in feasible]
  xy = lambda indices: ([points[i]['model_bytes'] / 1e6 for i in indices],
                        [points[i]['accuracy'] for i in indices])

  fig, ax = plt.subplots(figsize=(7, 4.5))
  if dominated:
    ax.scatter(*xy(dominated), color='tab:blue', alpha=0.25, label='dominated')
  if infeasible:
    ax.scatter(*xy(infeasible), color='gray', alpha=0.4, marker='x', label='over the size limit')
  ax.step(*xy(front), where='post', color='tab:red', alpha=0.6)
  ax.scatter(*xy(front), color='tab:red', zorder=3, label='Pareto front')
  labelled = set()
  for i, x, y in zip(front, *xy(front)):
    if 'number' in points[i] and (x, y) not in labelled:  # Repeats of a point: its first.
      labelled.add((x, y))
      ax.annotate(str(points[i]['number']), (x, y), textcoords='offset points', xytext=(4, 4),
                  fontsize=8)
  if n_validation:
    x, y = xy(range(len(points)))
    low, high = np.array([stats.wilson_interval(round(a * n_validation), n_validation)
                          for a in y]).T.reshape(2, -1)
    ax.errorbar(x, y, yerr=[np.array(y) - low, high - np.array(y)], fmt='none',
                ecolor='gray', alpha=0.4, capsize=2, label=f'95% interval (n={n_validation})')
  if majority is not None:
    ax.axhline(majority, color='gray', linestyle=':', label='majority class')
  if max_model_bytes is not None:
    ax.axvline(max_model_bytes / 1e6, color='gray', linestyle='--', label='size limit')
  _save(fig, ax, path, 'int8 model size (MB)', 'validation accuracy (the objective)', title)
  return front


def plot_sensitivity(sensitivity: dict, path: str):
  """Validation accuracy of each architecture (a line) under each compression setting (the x
  axis, in config order), served without retraining; a band marks the 95% interval of the
  first setting's mean, and the majority class is the floor."""
  settings, n = sensitivity['settings'], sensitivity['n_validation']
  fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(settings) + 4), 5))
  x = np.arange(len(settings))
  cmap = plt.get_cmap('viridis')
  depths = sorted({e['architecture']['num_layers'] for e in sensitivity['trials'].values()})
  for key, entry in sensitivity['trials'].items():
    arch = entry['architecture']
    y = [entry['accuracy'].get(s, np.nan) for s in settings]
    color = cmap(depths.index(arch['num_layers']) / max(1, len(depths) - 1))
    ax.plot(x, y, marker='o', markersize=4, color=color, alpha=0.8,
            label=(f'trial {key}: {arch["num_layers"]}L/{arch["num_heads"]}H/'
                   f'{arch["hidden_size"]}/{arch["intermediate_size"]}, '
                   f'{len(arch["identity"])} identity'))
  ax.axhline(sensitivity['majority_class_accuracy'], color='gray', linestyle=':',
             label='majority class')
  low, high = stats.wilson_interval(round(0.75 * n), n)
  ax.errorbar([-0.35], [0.75], yerr=[[0.75 - low], [high - 0.75]], fmt='none', ecolor='black',
              capsize=3, label=f'95% interval at 0.75 (n={n})')
  ax.set_xticks(x, settings, rotation=30, ha='right')
  _save(fig, ax, path, 'compression setting (served, no retraining)',
        f'validation accuracy (n={n})', 'Which architectures survive which compression')


def plot_ranking(ranking: dict, path: str):
  """One-shot estimate (served int8, inherited weights) vs the same architecture trained
  standalone by `retrain`, both on validation with 95% Wilson intervals, and Kendall's tau."""
  rows, n = ranking['architectures'], ranking['n_validation']
  x = np.array([r['one_shot_validation_accuracy'] for r in rows])
  y = np.array([r['standalone_validation_accuracy'] for r in rows])
  bars = lambda v: np.abs(np.array([stats.wilson_interval(round(a * n), n) for a in v]).T - v)
  fig, ax = plt.subplots(figsize=(7, 5))
  ax.errorbar(x, y, xerr=bars(x), yerr=bars(y), fmt='o', color='tab:blue', ecolor='gray',
              alpha=0.8, capsize=2, label=f'architecture (95% intervals, n={n})')
  for r, xi, yi in zip(rows, x, y):
    a = r['architecture']
    ax.annotate(f'{a["num_layers"]}/{a["num_heads"]}/{a["hidden_size"]}/'
                f'{a["intermediate_size"]},{len(a["identity"])}', (xi, yi),
                textcoords='offset points', xytext=(3, 3), fontsize=6)
  low, high = ranking['tau_interval']
  _save(fig, ax, path, 'one-shot estimate: served int8, inherited weights (validation)',
        'standalone retrain: served int8 (validation)',
        f'Kendall tau {ranking["tau"]:.2f} [{low:.2f}, {high:.2f}] over {len(rows)} '
        'architectures')
