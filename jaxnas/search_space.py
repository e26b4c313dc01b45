"""The search space, sampled from an Optuna trial.

Sizes are sampled as integer indices into the option lists, as the original lab did, so TPE
sees an ordered parameter. Each square Dense of the sampled architecture (and the pooler)
gets a categorical Linear/Identity choice named after it ('layer_0/query', 'pooler', and
'layer_0/intermediate' only when hidden_size == intermediate_size); the grid fixes them all
to Linear, as the original did.
The option lists come from the config (`config.search.space`); `LAB_SPACE` is the lab's.
"""

import itertools
import math

import optuna

from jaxnas.errors import UserError
from jaxnas.models import Architecture, square_dense_names

SIZE_NAMES = ('num_layers', 'num_heads', 'hidden_size', 'intermediate_size')
LAB_SPACE = {
    'num_layers': (2, 4, 8),
    'num_heads': (2, 4, 8, 16),
    'hidden_size': (128, 192, 256, 384, 512),
    'intermediate_size': (512, 768, 1024, 1536, 2048),
}
LINEAR, IDENTITY = 'linear', 'identity'


def index_param(name: str) -> str:
  return f'{name}_idx'


def validate_space(space) -> dict:
  """The option lists of `space` as tuples; every combination must be an architecture."""
  space = {name: tuple(space.get(name, ())) for name in SIZE_NAMES}
  empty = [name for name, options in space.items() if not options]
  if empty:
    raise UserError(f'search space has no options for {", ".join(empty)}')
  for heads, hidden in itertools.product(space['num_heads'], space['hidden_size']):
    if hidden % heads:
      raise UserError(f'search space pairs hidden_size={hidden} with num_heads={heads}, '
                      'which does not divide it')
  return space


def suggest_architecture(trial: optuna.Trial, space: dict,
                         with_identity_choices: bool = True) -> Architecture:
  sizes = {name: options[trial.suggest_int(index_param(name), 0, len(options) - 1)]
           for name, options in space.items()}
  identity = ()
  if with_identity_choices:
    identity = tuple(name for name in square_dense_names(sizes['num_layers'],
                                                         sizes['hidden_size'],
                                                         sizes['intermediate_size'])
                     if trial.suggest_categorical(name, (LINEAR, IDENTITY)) == IDENTITY)
  return Architecture(**sizes, identity=identity)


def grid_search_space(space: dict) -> dict:
  """All index points of the four size parameters (300 for the lab's space)."""
  return {index_param(name): list(range(len(options))) for name, options in space.items()}


def grid_size(space: dict) -> int:
  return math.prod(len(options) for options in space.values())
