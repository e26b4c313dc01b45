"""A finished one-shot run's ranking check against another standalone training recipe.

The ranking check (`oneshot.ranking_check`) trains its architectures standalone with the
run's own `train` settings; where those fail some architectures (the default's lr 1e-3 without
warmup leaves some 4-layer models at the majority class), Kendall tau measures the recipe as
much as the supernet. This trains the same architectures as `retrain` trials under the given
learning rate and warmup, and gives tau of the run's one-shot estimates against them (and of
the run's standalone scores against them). Each trial is kept in
`<workdir>/rerank_<lr>_<warmup>.json`, so a rerun continues (README: One-shot search).

  python -m jaxnas.rerank runs/oneshot 3e-4 25
"""

import json
import os
import sys


from jaxnas import oneshot, runner, search, workflows
from jaxnas.models import Architecture


def rerank(workdir: str, learning_rate: float, warmup_steps: int) -> dict:
  config = runner.workdir_config(workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    rows = json.load(f)['ranking']['architectures']
  config.train.learning_rate, config.train.warmup_steps = learning_rate, warmup_steps
  if config.compilation_cache_dir:
    workflows.use_compilation_cache(config.compilation_cache_dir)
  exp = workflows.prepare_experiment(config, show_progress=False)
  path = os.path.join(workdir, f'rerank_{learning_rate:g}_{warmup_steps}.json')
  done = {}
  if os.path.exists(path):
    with open(path) as f:
      done = json.load(f)['trials']
  for i, row in enumerate(rows):
    arch = Architecture.from_dict(row['architecture'])
    key = oneshot.arch_key(arch)
    if key not in done:
      value, trial, _, _ = workflows.run_trial(exp, arch, 'retrain')
      done[key] = {'validation_accuracy': value, 'trial_seconds': trial['trial_seconds'],
                   'float_validation_accuracy': trial['float_validation_accuracy']}
      search.write_json(path, {'trials': done})
    print(f'{i + 1}/{len(rows)} {oneshot.describe(arch)}: one-shot '
          f'{row["one_shot_validation_accuracy"]:.3f}, standalone (run) '
          f'{row["standalone_validation_accuracy"]:.3f}, standalone (lr {learning_rate:g}, '
          f'warmup {warmup_steps}) {done[key]["validation_accuracy"]:.3f} '
          f'({done[key]["trial_seconds"]:.0f}s)', flush=True)
  recipe = [done[oneshot.arch_key(Architecture.from_dict(r['architecture']))]
            ['validation_accuracy'] for r in rows]
  result = {
      'learning_rate': learning_rate, 'warmup_steps': warmup_steps,
      'n_validation': len(exp.validation_split),
      'one_shot_vs_recipe': oneshot.kendall_tau(
          [r['one_shot_validation_accuracy'] for r in rows], recipe, config.seed),
      'run_standalone_vs_recipe': oneshot.kendall_tau(
          [r['standalone_validation_accuracy'] for r in rows], recipe, config.seed),
      'trials': done}
  search.write_json(path, result)
  print(json.dumps({k: v for k, v in result.items() if k != 'trials'}, indent=1))
  return result


if __name__ == '__main__':
  rerank(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
