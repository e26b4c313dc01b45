import itertools

import optuna

from jaxnas import search, search_space
from jaxnas.models import Architecture


def test_sizes_are_sampled_as_indices_and_identity_choices_take_effect():
  params = {'num_layers_idx': 1, 'num_heads_idx': 3, 'hidden_size_idx': 4,
            'intermediate_size_idx': 0}
  identity = {name: 'identity' if name in ('layer_2/key', 'pooler') else 'linear'
              for name in search_space.square_dense_names(4)}
  arch = search_space.suggest_architecture(optuna.trial.FixedTrial(params | identity))
  assert arch == Architecture(4, 16, 512, 512, identity=('layer_2/key', 'pooler'))
  assert search_space.architecture_from_params(params | identity) == arch
  grid_arch = search_space.suggest_architecture(optuna.trial.FixedTrial(params),
                                                with_identity_choices=False)
  assert grid_arch.identity == ()


def test_every_point_of_the_space_is_a_valid_architecture():
  assert search_space.grid_size() == 300
  for sizes in itertools.product(*search_space.SIZE_OPTIONS.values()):
    Architecture(*sizes)


def test_grid_sampler_visits_distinct_points_in_seeded_order():
  def sample(seed):
    study = optuna.create_study(sampler=search.make_sampler('grid', seed))
    points = []
    for _ in range(20):
      trial = study.ask()
      points.append(search_space.suggest_architecture(trial, with_identity_choices=False))
      study.tell(trial, 0.5)
    return points
  first = sample(0)
  assert len(set(first)) == 20
  assert sample(0) == first and sample(1) != first
