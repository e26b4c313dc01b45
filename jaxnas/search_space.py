"""The search space of the lab, sampled from an Optuna trial.

Sizes are sampled as integer indices into the option lists, as the original did, so TPE sees an
ordered parameter. Each square Dense of the sampled depth (and the pooler) gets a categorical
Linear/Identity choice; the grid fixes them all to Linear, as the original did.
"""

import math

import optuna

from jaxnas.models import Architecture, square_dense_names

NUM_LAYERS = (2, 4, 8)
NUM_HEADS = (2, 4, 8, 16)
HIDDEN_SIZE = (128, 192, 256, 384, 512)
INTERMEDIATE_SIZE = (512, 768, 1024, 1536, 2048)
SIZE_OPTIONS = {
    'num_layers': NUM_LAYERS,
    'num_heads': NUM_HEADS,
    'hidden_size': HIDDEN_SIZE,
    'intermediate_size': INTERMEDIATE_SIZE,
}
LINEAR, IDENTITY = 'linear', 'identity'


def index_param(name: str) -> str:
  return f'{name}_idx'


def suggest_architecture(trial: optuna.Trial, with_identity_choices: bool = True) -> Architecture:
  sizes = {name: options[trial.suggest_int(index_param(name), 0, len(options) - 1)]
           for name, options in SIZE_OPTIONS.items()}
  identity = ()
  if with_identity_choices:
    identity = tuple(name for name in square_dense_names(sizes['num_layers'])
                     if trial.suggest_categorical(name, (LINEAR, IDENTITY)) == IDENTITY)
  return Architecture(**sizes, identity=identity)


def architecture_from_params(params: dict) -> Architecture:
  """Rebuilds the architecture of a finished trial from its recorded parameters."""
  sizes = {name: options[params[index_param(name)]] for name, options in SIZE_OPTIONS.items()}
  identity = tuple(name for name in square_dense_names(sizes['num_layers'])
                   if params.get(name) == IDENTITY)
  return Architecture(**sizes, identity=identity)


def grid_search_space() -> dict:
  """All 3 * 4 * 5 * 5 = 300 index points of the four size parameters."""
  return {index_param(name): list(range(len(options))) for name, options in SIZE_OPTIONS.items()}


def grid_size() -> int:
  return math.prod(len(options) for options in SIZE_OPTIONS.values())
