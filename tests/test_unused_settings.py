"""A setting given on the command line that the run would ignore is refused, naming what
would use it; the same setting where it takes effect is accepted."""

import pytest

from jaxnas import unused_settings
from jaxnas.errors import UserError

# (workflow, config values the run has, settings given on the command line, error or None).
# configs/test.py: local data without a test file, a tokenizer trained here, AQT int8 with
# 50% weight pruning and no activation pruning, no pruner.
CASES = [
    ('retrain', {'data.source': 'embedded'}, ['--config.data.train_path'],
     '--config.data.train_path has no effect unless --config.data.source=local'),
    ('retrain', {'data.source': 'imdb'}, ['--config.data.test_path'],
     '--config.data.test_path has no effect unless --config.data.source=local'),
    ('retrain', {'data.source': 'embedded'}, ['--config.data.text_column'], 'source=local'),
    ('retrain', {'data.source': 'embedded'}, ['--config.data.label_column'], 'source=local'),
    ('retrain', {}, ['--config.data.hub_name'],
     '--config.data.hub_name has no effect unless --config.data.source=imdb'),
    ('retrain', {'data.source': 'imdb'}, ['--config.data.test_fraction'],
     '--config.data.test_fraction has no effect unless --config.data.source=embedded, or '
     'local without a test_path'),
    ('retrain', {'data.test_path': 'test.csv'}, ['--config.data.test_fraction'],
     'test_fraction has no effect'),
    ('retrain', {'tokenizer.name': 'bert-base-uncased'}, ['--config.tokenizer.vocab_size'],
     '--config.tokenizer.vocab_size has no effect unless --config.tokenizer.name is empty'),
    ('retrain', {'tokenizer.name': 'bert-base-uncased'}, ['--config.tokenizer.cache_dir'],
     'cache_dir has no effect unless --config.tokenizer.name is empty'),
    ('retrain', {}, ['--config.compression.fixed_point.frac_width'],
     '--config.compression.fixed_point.frac_width has no effect unless '
     '--config.compression.quant_engine=fixed'),
    ('retrain', {'compression.weight_sparsity': 0.0}, ['--config.compression.prune_scope'],
     'prune_scope has no effect unless --config.compression.weight_sparsity is above 0'),
    ('retrain', {}, ['--config.compression.activation_prune_scope'],
     'activation_prune_scope has no effect unless --config.compression.activation_sparsity '
     'is above 0'),
    ('baseline', {'search.pruner': 'median'}, ['--config.search.pruner'],
     '--config.search.pruner has no effect unless --config.search.report_every_steps is above '
     '0, with one objective'),
    ('baseline', {'search.pruner': 'median', 'search.report_every_steps': 10,
                  'search.objectives': 'accuracy,size'}, ['--config.search.pruner'],
     'pruner has no effect unless'),
    ('baseline', {'search.report_every_steps': 10}, ['--config.search.report_every_steps'],
     'report_every_steps has no effect unless --config.search.pruner is not none'),
    ('samplers', {}, ['--sampler'],
     '--sampler has no effect with --workflow=samplers; it is used by --workflow=baseline/'),
    ('samplers', {}, ['--config.search.sampler'], 'no effect with --workflow=samplers'),
    ('report', {}, ['--n_trials'], '--n_trials has no effect with --workflow=report'),
    ('evaluate', {}, ['--storage'], '--storage has no effect with --workflow=evaluate'),
    ('retrain', {}, ['--checkpoint'],
     '--checkpoint has no effect with --workflow=retrain; it is used by '
     '--workflow=evaluate/engines'),
    ('oneshot', {}, ['--repeats'], '--repeats has no effect with --workflow=oneshot'),
    ('oneshot', {}, ['--trials_in_parallel'], 'no effect with --workflow=oneshot'),
    ('evaluate', {}, ['--workdir'], '--workdir has no effect with --workflow=evaluate'),
    ('evaluate', {}, ['--seed'], '--seed has no effect with --workflow=evaluate'),
    # A saved model is scored on its own data, with its own tokenizer and sizes.
    ('evaluate', {}, ['--config.data.test_path'], 'no effect with --workflow=evaluate'),
    ('engines', {}, ['--config.tokenizer.max_length'], 'no effect with --workflow=engines'),
    ('evaluate', {}, ['--config.model.dtype'], 'no effect with --workflow=evaluate'),
    ('evaluate', {}, ['--config.train.batch_size'], 'no effect with --workflow=evaluate'),
    ('engines', {}, ['--config.compression.quant_engine'], 'no effect with --workflow=engines'),
    ('compress', {}, ['--config.compression.retrain_epochs'],
     '--config.compression.retrain_epochs has no effect with --workflow=compress; it is used '
     'by --workflow=baseline/retrain/compare/oneshot/engines'),
    ('retrain', {}, ['--config.oneshot.epochs'], 'no effect with --workflow=retrain'),
    ('baseline', {}, ['--config.sensitivity.settings'], 'no effect with --workflow=baseline'),
    ('report', {}, ['--config.compilation_cache_dir'], 'no effect with --workflow=report'),
    # The first ignored setting of several is named.
    ('retrain', {'data.source': 'embedded'}, ['--n_trials', '--config.data.hub_name',
                                              '--config.data.train_path'],
     '--config.data.hub_name has no effect'),
    # Where each takes effect.
    ('retrain', {'data.test_path': 'test.csv'},
     ['--config.data.train_path', '--config.data.test_path', '--config.data.text_column',
      '--config.data.label_column', '--config.tokenizer.vocab_size',
      '--config.tokenizer.cache_dir', '--config.compression.prune_scope', '--sampler',
      '--n_trials', '--repeats', '--trials_in_parallel', '--storage', '--study_name', '--seed',
      '--workdir', '--objectives', '--max_model_bytes', '--config.seed'], None),
    ('retrain', {'data.source': 'imdb'}, ['--config.data.hub_name'], None),
    ('retrain', {}, ['--config.data.test_fraction'], None),
    ('retrain', {'data.source': 'embedded'}, ['--config.data.test_fraction'], None),
    ('retrain', {'compression.quant_engine': 'fixed'},
     ['--config.compression.fixed_point.width', '--config.compression.quant_engine'], None),
    ('retrain', {'compression.activation_sparsity': 0.5},
     ['--config.compression.activation_prune_scope'], None),
    ('baseline', {'search.pruner': 'median', 'search.report_every_steps': 10},
     ['--config.search.pruner', '--config.search.report_every_steps'], None),
    ('baseline', {}, ['--config.search.pruner', '--config.search.report_every_steps',
                      '--config.compression.retrain_epochs'], None),  # none and 0: no pruner.
    ('samplers', {}, ['--n_trials', '--repeats'], None),
    ('oneshot', {}, ['--config.oneshot.epochs', '--config.search.space.num_layers'], None),
    ('sensitivity', {}, ['--config.sensitivity.settings'], None),
    ('evaluate', {}, ['--checkpoint', '--config.train.eval_batch_size'], None),
    ('engines', {}, ['--checkpoint', '--seed', '--config.train.learning_rate',
                     '--config.compression.weight_sparsity'], None),
    ('report', {}, ['--workdir'], None),
]


@pytest.mark.parametrize('workflow, values, given, error', CASES)
def test_a_setting_the_run_ignores_is_refused(test_config, workflow, values, given, error):
  for path, value in values.items():
    section, name = path.split('.')
    test_config[section][name] = value
  if error is None:
    unused_settings.check(workflow, test_config, given)
  else:
    with pytest.raises(UserError) as raised:
      unused_settings.check(workflow, test_config, given)
    assert error in str(raised.value)


def test_every_workflow_has_its_users():
  """Each workflow reads some of the settings (a typo in the table would refuse them all)."""
  from jaxnas import runner  # pylint: disable=g-import-not-at-top
  users = {workflow for _, workflows in unused_settings.WORKFLOWS_USING
           for workflow in workflows}
  assert users == set(runner.ALL_WORKFLOWS)
