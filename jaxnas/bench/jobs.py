"""The cases that time whole jobs: a `retrain` trial (`trial`), two fresh processes running one
(`compile`), and the default search (`search`)."""

import json
import os
import subprocess
import sys
import tempfile

from jaxnas import workflows
from jaxnas.bench.measure import timed
from jaxnas.models import Architecture


def trial_case(cache_dir: str) -> dict:
  """A `retrain` trial of configs/default.py using the persistent compilation cache."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.compilation_cache_dir = cache_dir
  workflows.use_compilation_cache(cache_dir)
  exp = workflows.prepare_experiment(config, show_progress=False)
  arch = Architecture(2, 4, 128, 512)
  with workflows.CompileClock() as meter:
    _, seconds = timed(lambda: workflows.run_trial(exp, arch, 'retrain'))
  return {'case': 'trial', 'architecture': arch.to_dict(), 'trial_seconds': round(seconds, 2),
          'compile_seconds': round(meter.seconds, 2),
          'xla_compile_seconds': round(meter.xla_seconds, 2),
          'compile_fraction': round(meter.seconds / seconds, 3),
          'persistent_cache': dict(meter.cache_events)}


def compile_case() -> dict:
  """Two fresh processes run the same trial: one with an empty cache, one after it."""
  with tempfile.TemporaryDirectory() as cache_dir:
    runs = {}
    for name in ('cold', 'warm'):
      out = subprocess.run([sys.executable, '-m', 'jaxnas.bench', '--cases=trial',
                            f'--cache_dir={cache_dir}'], check=True, capture_output=True,
                           text=True).stdout
      runs[name] = json.loads(out.strip().splitlines()[-1])
  cold, warm = runs['cold'], runs['warm']
  return {'case': 'compile', 'architecture': cold['architecture'],
          'cold': {k: v for k, v in cold.items() if k not in ('case', 'architecture')},
          'warm': {k: v for k, v in warm.items() if k not in ('case', 'architecture')}}


def search_case() -> dict:
  """Wall time of the default job against the time its training loops and scoring
  evaluations spent computing.

  All compilation counts as overhead: `compile_seconds` covers the whole trial and is taken
  off the loops and evaluations, which include theirs, so both overhead fractions are upper
  bounds. `overhead_fraction` counts the scoring evaluations as the search's work,
  `non_training_fraction` counts them as overhead.
  """
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with tempfile.TemporaryDirectory() as workdir:
    command = [sys.executable, 'launch.py', f'--workdir={workdir}',
               f'--config.compilation_cache_dir={workdir}/xla',
               f'--config.tokenizer.cache_dir={workdir}/tokenizers']
    _, seconds = timed(lambda: subprocess.run(command, cwd=repo, check=True,
                                              capture_output=True))
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  trials = [t for t in results['trials'] if t['state'] == 'COMPLETE']
  best = results['best']
  total = lambda key: sum(t[key] for t in trials)
  loops = total('train_seconds') + total('retrain_seconds')
  evals, compile_seconds = total('eval_seconds'), total('compile_seconds')
  work = loops + evals - compile_seconds
  return {'case': 'search', 'command': 'python launch.py', 'trials': len(trials),
          'best_trial': best['number'], 'best_validation_accuracy': best['validation_accuracy'],
          'n_validation': best['n_validation'], 'best_test_accuracy': best['test_accuracy'],
          'best_test_accuracy_interval': [round(x, 4) for x in best['test_accuracy_interval']],
          'n_test': best['n_test'],
          'wall_seconds': round(seconds, 1), 'training_loop_seconds': round(loops, 1),
          'eval_seconds': round(evals, 1), 'compile_seconds': round(compile_seconds, 1),
          'training_and_eval_seconds_without_compile': round(work, 1),
          'compile_fraction': round(compile_seconds / seconds, 3),
          'eval_fraction': round(evals / seconds, 3),
          'overhead_fraction': round(1 - work / seconds, 3),
          'non_training_fraction': round(1 - (work - evals) / seconds, 3)}
