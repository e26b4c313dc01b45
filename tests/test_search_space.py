import itertools

import optuna
import pytest

from jaxnas import samplers, search_space
from jaxnas.errors import UserError
from jaxnas.models import Architecture


def test_sizes_are_sampled_as_indices_and_identity_choices_take_effect():
  params = {'num_layers_idx': 1, 'num_heads_idx': 3, 'hidden_size_idx': 4,
            'intermediate_size_idx': 0}
  chosen = ('layer_2/key', 'layer_3/output', 'pooler')
  identity = {name: 'identity' if name in chosen else 'linear'
              for name in search_space.square_dense_names(4, 512, 512)}
  space = search_space.LAB_SPACE
  arch = search_space.suggest_architecture(optuna.trial.FixedTrial(params | identity), space)
  assert arch == Architecture(4, 16, 512, 512, identity=chosen)
  grid_arch = search_space.suggest_architecture(optuna.trial.FixedTrial(params), space,
                                                with_identity_choices=False)
  assert grid_arch.identity == ()


def test_feed_forward_layers_are_offered_identity_only_where_square():
  # The lab's rule: Linear or Identity for every Linear whose input and output sizes are equal.
  square = search_space.square_dense_names(2, 512, 512)
  assert square[:6] == ['layer_0/query', 'layer_0/key', 'layer_0/value',
                        'layer_0/attention_output', 'layer_0/intermediate', 'layer_0/output']
  assert len(square) == 2 * 6 + 1 and square[-1] == 'pooler'
  not_square = search_space.square_dense_names(2, 512, 1024)
  assert not_square == [n for n in square if not n.endswith(('intermediate', 'output'))
                        or n.endswith('attention_output')]
  with pytest.raises(UserError, match='unknown identity'):
    Architecture(2, 4, 512, 1024, identity=('layer_0/intermediate',))


def test_every_point_of_the_space_is_a_valid_architecture():
  space = search_space.validate_space(search_space.LAB_SPACE)
  assert search_space.grid_size(space) == 300
  for sizes in itertools.product(*space.values()):
    Architecture(*sizes)


def test_a_space_with_impossible_architectures_is_rejected():
  with pytest.raises(UserError, match='does not divide'):
    search_space.validate_space(search_space.LAB_SPACE | {'num_heads': (3,)})
  with pytest.raises(UserError, match='no options'):
    search_space.validate_space(search_space.LAB_SPACE | {'num_layers': ()})


def test_grid_sampler_visits_distinct_points_in_seeded_order():
  def sample(seed):
    space = search_space.LAB_SPACE
    study = optuna.create_study(sampler=samplers.make_sampler('grid', seed, space))
    points = []
    for _ in range(20):
      trial = study.ask()
      points.append(search_space.suggest_architecture(trial, space, with_identity_choices=False))
      study.tell(trial, 0.5)
    return points
  first = sample(0)
  assert len(set(first)) == 20
  assert sample(0) == first and sample(1) != first
