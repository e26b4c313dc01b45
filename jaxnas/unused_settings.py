"""Refuses a setting given on the command line that the chosen options would ignore.

A run does what its command line says, or nothing: `--config.data.train_path=x.csv` without
`--config.data.source=local` once ran the whole embedded-IMDb job and exited 0. Each setting
takes effect in some workflows (`WORKFLOWS_USING`), and some only under other settings
(`CONDITIONS`); given anywhere else it is one error line that names what would use it. Values
that a config file sets are not checked: one config file serves several workflows.
"""

from jaxnas.errors import UserError

SEARCHES = ('baseline', 'compress', 'retrain', 'samplers', 'compare', 'sensitivity', 'oneshot')
SAVED_MODEL = ('evaluate', 'engines')  # A saved model brings its own data, tokenizer and sizes.
_STUDIES = tuple(w for w in SEARCHES if w != 'oneshot')  # Optuna studies of trials.
_CHOOSING_SAMPLER = tuple(w for w in SEARCHES if w != 'samplers')  # samplers runs them all.

# A flag as typed, or a config field (a section or a prefix covers its fields), and the
# workflows that read it. The first entry that matches applies.
WORKFLOWS_USING = (
    ('--sampler', _CHOOSING_SAMPLER), ('--n_trials', SEARCHES), ('--objectives', SEARCHES),
    ('--max_model_bytes', SEARCHES), ('--storage', SEARCHES), ('--study_name', SEARCHES),
    ('--repeats', _STUDIES), ('--trials_in_parallel', _STUDIES),
    ('--checkpoint', SAVED_MODEL), ('--workdir', SEARCHES + ('report',)),
    ('--seed', SEARCHES + ('engines',)), ('seed', SEARCHES + ('engines',)),
    ('search.sampler', _CHOOSING_SAMPLER), ('search.pruner', _STUDIES),
    ('search.report_every_steps', _STUDIES), ('search.', SEARCHES),
    ('oneshot.', ('oneshot',)), ('sensitivity.', ('sensitivity',)),
    ('compilation_cache_dir', SEARCHES),
    ('data.', SEARCHES), ('tokenizer.', SEARCHES), ('model.', SEARCHES),
    ('train.eval_batch_size', SEARCHES + SAVED_MODEL), ('train.', SEARCHES + ('engines',)),
    # Post-compression training: the retrain trials, and the best model of a baseline study.
    ('compression.retrain_', ('baseline', 'retrain', 'compare', 'oneshot', 'engines')),
    ('compression.quant_engine', SEARCHES), ('compression.fixed_point', SEARCHES),
    ('compression.', SEARCHES + ('engines',)),
)


def _local(config) -> bool:
  return config.data.source == 'local'


def _single_objective(config) -> bool:
  return ',' not in config.search.objectives


# A config field, the settings under which it takes effect (in words), and whether they hold.
CONDITIONS = (
    *((f'data.{name}', '--config.data.source=local', _local)
      for name in ('train_path', 'test_path', 'text_column', 'label_column')),
    ('data.hub_name', '--config.data.source=imdb', lambda c: c.data.source == 'imdb'),
    ('data.test_fraction', '--config.data.source=embedded, or local without a test_path',
     lambda c: c.data.source == 'embedded' or (_local(c) and not c.data.test_path)),
    *((f'tokenizer.{name}', '--config.tokenizer.name is empty (a tokenizer trained here)',
       lambda c: not c.tokenizer.name) for name in ('vocab_size', 'cache_dir')),
    ('compression.fixed_point', '--config.compression.quant_engine=fixed',
     lambda c: c.compression.quant_engine == 'fixed'),
    ('compression.prune_scope', '--config.compression.weight_sparsity is above 0',
     lambda c: c.compression.weight_sparsity > 0),
    ('compression.activation_prune_scope', '--config.compression.activation_sparsity is above 0',
     lambda c: c.compression.activation_sparsity > 0),
    ('search.pruner', '--config.search.report_every_steps is above 0, with one objective',
     lambda c: c.search.pruner == 'none' or (c.search.report_every_steps > 0
                                              and _single_objective(c))),
    ('search.report_every_steps', '--config.search.pruner is not none, with one objective',
     lambda c: not c.search.report_every_steps or (c.search.pruner != 'none'
                                                    and _single_objective(c))),
)


def _matches(name: str, pattern: str) -> bool:
  return name == pattern or (pattern.endswith(('.', '_')) and name.startswith(pattern)) or (
      name.startswith(pattern + '.'))


def check(workflow: str, config, given) -> None:
  """Raises a UserError for the first of `given` (flags as typed, `--sampler`, and config
  fields as typed, `--config.data.train_path`) that has no effect in `workflow` with
  `config`."""
  for name in given:
    field = name.removeprefix('--config.')
    users = next((users for pattern, users in WORKFLOWS_USING if _matches(field, pattern)),
                 None)
    if users is not None and workflow not in users:
      raise UserError(f'{name} has no effect with --workflow={workflow}; it is used by '
                      f'--workflow={"/".join(users)}')
    for pattern, needs, holds in CONDITIONS:
      if _matches(field, pattern) and not holds(config):
        raise UserError(f'{name} has no effect unless {needs}')
