"""Figures: best-so-far objective vs trial, one curve per sampler or per workflow."""

import matplotlib

matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top


def plot_best_so_far(curves: dict, path: str, title: str, ylabel: str):
  """`curves` maps a label to its best-so-far values (one per completed trial)."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, values in curves.items():
    if values:
      ax.step(range(1, len(values) + 1), values, where='post', marker='o', markersize=4,
              label=label)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel('completed trial')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
