"""Magnitude pruning masks for Dense kernels.

Masks are computed once from trained weights and then held fixed (see `train.apply_masks`).
The threshold is on |w| (L1 magnitude), either per tensor ('local') or over all kernels
together ('global'). Ranking instead of comparing to a threshold value makes the pruned
fraction exact even when magnitudes tie.
"""

import flax
import numpy as np

from jaxnas.errors import UserError

SCOPES = ('local', 'global')


def prunable_paths(params) -> list[str]:
  """Every Dense kernel (pooler and classifier included); embeddings and LayerNorm are not."""
  return [path for path in flax.traverse_util.flatten_dict(params, sep='/')
          if path.endswith('/kernel')]


def magnitude_masks(params, sparsity: float, scope: str = 'local') -> dict:
  """{path: float32 0/1 mask} that zeroes the `sparsity` fraction of smallest-|w| weights."""
  if not 0.0 <= sparsity < 1.0:
    raise UserError(f'weight sparsity must be in [0, 1), got {sparsity}')
  if scope not in SCOPES:
    raise UserError(f'unknown pruning scope {scope!r}; use one of {SCOPES}')
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  kernels = {path: np.abs(np.asarray(flat[path], np.float32)) for path in prunable_paths(params)}
  if scope == 'local':
    return {path: _keep_largest(magnitude, sparsity) for path, magnitude in kernels.items()}
  paths = list(kernels)
  keep = _keep_largest(np.concatenate([kernels[p].ravel() for p in paths]), sparsity)
  ends = np.cumsum([kernels[p].size for p in paths])
  return {p: part.reshape(kernels[p].shape) for p, part in zip(paths, np.split(keep, ends[:-1]))}


def _keep_largest(magnitude: np.ndarray, sparsity: float) -> np.ndarray:
  num_pruned = int(round(sparsity * magnitude.size))
  mask = np.ones(magnitude.size, np.float32)
  mask[np.argsort(magnitude.ravel(), kind='stable')[:num_pruned]] = 0.0
  return mask.reshape(magnitude.shape)


def measured_sparsity(params) -> dict:
  """Fraction of exact zeros in the prunable kernels: overall and per tensor."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  per_tensor = {p: float(np.mean(np.asarray(flat[p]) == 0)) for p in prunable_paths(params)}
  sizes = {p: flat[p].size for p in per_tensor}
  total = sum(sizes.values())
  overall = sum(per_tensor[p] * sizes[p] for p in per_tensor) / total if total else 0.0
  return {'overall': overall, 'per_tensor': per_tensor}
