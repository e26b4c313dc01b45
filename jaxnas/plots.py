"""Figures: best-so-far objective vs trial (one curve per sampler or per workflow), and
accuracy vs model size with its Pareto front."""

import matplotlib

matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top

from jaxnas import objectives  # pylint: disable=g-import-not-at-top


def plot_best_so_far(curves: dict, path: str, title: str, ylabel: str):
  """`curves` maps a label to its best-so-far values (one per completed trial)."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, values in curves.items():
    if values:
      ax.step(range(1, len(values) + 1), values, where='post', marker='o', markersize=4,
              label=label)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  _save(fig, ax, path, 'completed trial', ylabel, title)


def _save(fig, ax, path: str, xlabel: str, ylabel: str, title: str):
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_pareto(points, path: str, title: str = 'Accuracy vs int8 model size',
                max_model_bytes: int | None = None) -> list[int]:
  """Accuracy vs model bytes, one marker per trial; returns the indices of the front.

  `points` are dicts with 'accuracy' and 'model_bytes' (and optionally 'number', the trial
  number, used as a label). A point is on the front when no other feasible point is at least
  as accurate and at most as large, and strictly better in one of the two. Dominated points
  are dimmed; with `max_model_bytes`, larger points are infeasible: drawn as crosses, never on
  the front, and the limit is a dashed line.
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
  for i, x, y in zip(front, *xy(front)):
    if 'number' in points[i]:
      ax.annotate(str(points[i]['number']), (x, y), textcoords='offset points', xytext=(4, 4),
                  fontsize=8)
  if max_model_bytes is not None:
    ax.axvline(max_model_bytes / 1e6, color='gray', linestyle='--', label='size limit')
  _save(fig, ax, path, 'int8 model size (MB)', 'accuracy (int8, served)', title)
  return front
