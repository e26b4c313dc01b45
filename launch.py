"""jaxnas: compression-aware neural architecture search (command line).

  python launch.py --workflow=retrain
  python launch.py --workflow=samplers --n_trials=30 --repeats=3 --config=configs/lab2.py
  python launch.py --workflow=compare --config.train.batch_size=8
  python launch.py --workflow=report --workdir=workdir

Workflows (--workflow):
  baseline  NAS on float accuracy; the best model is compressed after the search
  compress  each trial trained, pruned and quantized, scored as a served int8 model
  retrain   like compress, plus post-compression training (QAT) before scoring (default)
  samplers  one baseline study per sampler (grid, random, TPE) on the same space
  compare   one study per workflow above, with paired tests between their best models
  evaluate  score a saved model (--checkpoint=DIR) on its test split
  engines   compress one saved model with each int8 engine (AQT, Qwix)
  report    write report.html for the search in --workdir

Every objective is a validation accuracy; test accuracies (with 95% intervals) are reported.
Config fields (--config.section.field=value) are documented in configs/default.py.
"""

import os
import sys

from jaxnas import hugepages

if __name__ == '__main__':
  hugepages.restart_with_huge_pages()  # Before the heavy imports, which a restart would redo.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags, logging
from ml_collections import config_flags

from jaxnas import distributed, runner
from jaxnas.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))

NO_SUCH_FIELD = 'error: --config.* names no such config field: {}'
try:  # ml_collections applies --config.* overrides to the default config here already.
  _CONFIG = config_flags.DEFINE_config_file(
      'config', os.path.join(HERE, 'configs', 'default.py'), 'Config file (get_config()).')
except (AttributeError, KeyError) as e:
  sys.exit(NO_SUCH_FIELD.format(str(e).strip('"')))
_WORKFLOW = flags.DEFINE_enum('workflow', 'retrain', runner.ALL_WORKFLOWS, 'What to run.')
_SAMPLER = flags.DEFINE_enum('sampler', None, ('grid', 'random', 'tpe', 'nsga2'),
                             'Optuna sampler (default: config.search.sampler).')
_OBJECTIVES = flags.DEFINE_string(
    'objectives', None, 'accuracy, or accuracy,size / accuracy,latency for a multi-objective '
    'search (default: config.search.objectives).')
_MAX_MODEL_BYTES = flags.DEFINE_integer(
    'max_model_bytes', None, 'Only int8 models of at most this many bytes count as feasible '
    '(default: config.search.max_model_bytes; 0 = no limit).')
_N_TRIALS = flags.DEFINE_integer('n_trials', None,
                                 'Complete trials per study (default: config.search.n_trials).')
_REPEATS = flags.DEFINE_integer(
    'repeats', 1, 'Independent studies per sampler or workflow, with seeds seed .. seed + '
    'repeats - 1 (same data split); figures show their mean and spread.')
_TRIALS_IN_PARALLEL = flags.DEFINE_string(
    'trials_in_parallel', '1', 'Trials run at once on this host, each on its own equal share '
    'of the devices; auto = one per device (a CPU is one device). See README: devices.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdir', 'Results, models, figures, study.db.')
_STORAGE = flags.DEFINE_string('storage', '',
                               'Optuna storage URL (default: sqlite in the workdir).')
_STUDY_NAME = flags.DEFINE_string('study_name', 'jaxnas', 'Optuna study name.')
_SEED = flags.DEFINE_integer('seed', None, 'Sampler, init and dropout seed (default: config).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', '',
                                  'Model directory for --workflow=evaluate and engines.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-process runs: host:port of process 0 (on a multi-host '
    'TPU VM slice the processes find each other without these three flags).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 1, 'Multi-process runs: process count.')
_PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'Multi-process runs: this process, from 0.')
# Flags that some workflows ignore (jaxnas/unused_settings.py says which).
GIVEN_FLAGS = ('sampler', 'objectives', 'max_model_bytes', 'n_trials', 'repeats',
               'trials_in_parallel', 'workdir', 'storage', 'study_name', 'seed', 'checkpoint')


def parse_flags(argv):
  """absl's parsing, with an unknown --config.* field as one error line, and --help a
  success (absl exits 1 after printing it)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    sys.exit(NO_SUCH_FIELD.format(str(e).strip('"')))
  except SystemExit:
    if {'--help', '-h', '-?', '--helpshort', '--helpfull'} & set(argv[1:]):
      sys.exit(0)
    raise


def given_settings() -> tuple[str, ...]:
  """The flags and config fields the command line set, as typed (`--n_trials`,
  `--config.data.train_path`): runner.run refuses those the run would ignore."""
  flags_given = tuple(f'--{name}' for name in GIVEN_FLAGS if flags.FLAGS[name].present)
  fields = tuple(f'--config.{field}'
                 for field in config_flags.get_override_values(flags.FLAGS['config']))
  return flags_given + fields


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  try:
    config = _CONFIG.value.lock()  # A run adds no fields (and a failed load raises here).
  except (OSError, ValueError, TypeError) as e:  # A missing or broken config file.
    details = [line.strip() for line in str(e).splitlines() if line.strip()]
    sys.exit(f'error: cannot load --config: {details[-1] if details else type(e).__name__}')
  if _SEED.value is not None:
    config.seed = _SEED.value
  if _OBJECTIVES.value is not None:
    config.search.objectives = _OBJECTIVES.value
  if _MAX_MODEL_BYTES.value is not None:
    config.search.max_model_bytes = _MAX_MODEL_BYTES.value
  spec = runner.RunSpec(
      workflow=_WORKFLOW.value, sampler=_SAMPLER.value or config.search.sampler,
      n_trials=config.search.n_trials if _N_TRIALS.value is None else _N_TRIALS.value,
      workdir=_WORKDIR.value,
      storage=_STORAGE.value, study_name=_STUDY_NAME.value, checkpoint=_CHECKPOINT.value,
      repeats=_REPEATS.value, trials_in_parallel=_TRIALS_IN_PARALLEL.value,
      given=given_settings())
  stop_signals = runner.StopSignals()
  stop_signals.install()
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    runner.run(spec, config, stop_signals.requested)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print('interrupted: finished trials are saved; run the same command again to resume',
          file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
