"""summary.md: the best model of each study with its test accuracy, interval and sample size,
the mean over repeats, and the paired tests between studies."""

import collections

import numpy as np

from jaxnas import plots, stats


def summary_markdown(results: dict) -> str:
  runs = results['runs']
  first = next(iter(runs.values()))
  lines = [f'# jaxnas: {results["workflow"]}', '',
           f'Selection (objective, best trial) on the validation split (n={first["n_validation"]}'
           f'); the test split (n={first["n_test"]}) is scored once per trial and never '
           f'selects. Test accuracies with 95% Wilson intervals. Majority class: '
           f'{first["majority_class_accuracy"]:.3f} of the test split.',
           *([f'Compression: {compression_text(first["compression"])}.']
             if first.get('compression') else []), '',
           '| run | Optuna study | seed | objective (validation) | best trial | validation '
           '| test [95% interval] | float test [95% interval] | L/H/d/ff, identity | sparsity '
           '| int8 bytes | float bytes |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name, run in runs.items():
    best = run['best']
    objective = plots.OBJECTIVE_FORMS.get(run['workflow'], run['workflow'])
    if best is None:
      lines.append(f'| {name} | {run["study_name"]} | {run["seed"]} | {objective} | '
                   'no feasible completed trial | | | | | | | |')
      continue
    arch = best['architecture']
    lines.append(
        f'| {name} | {run["study_name"]} | {run["seed"]} | {objective} | {best["number"]} | '
        f'{best["validation_accuracy"]:.3f} | {stats.interval_text(best, "test")} | '
        f'{stats.interval_text(best, "float_test")} | {shape_text(arch)} | '
        f'{best["sparsity"]:.3f} | '
        f'{best["model_bytes"]:,} | {best["float_model_bytes"]:,} |')
    post = run.get('post_compression')
    if post:
      lines.append(
          f'| {name}, its best model compressed after the search | | | served int8, pruned: '
          f'without / with QAT | {post["trial"]} | {post["int8_validation_accuracy"]:.3f} / '
          f'{post["retrained_int8_validation_accuracy"]:.3f} | '
          f'{stats.interval_text(post, "int8_test")} / '
          f'{stats.interval_text(post, "retrained_int8_test")} | '
          f'{stats.interval_text(post, "float_test")} | same | '
          f'{post["retrained_sparsity"]:.3f} | {post["retrained_model_bytes"]:,} | |')
  lines += (_repeats_table(runs) + _across_repeats_section(results.get('across_repeats'))
            + _comparisons_table(results.get('comparisons', [])))
  return '\n'.join(lines)


def _repeats_table(runs: dict) -> list[str]:
  groups = collections.defaultdict(list)
  for run in runs.values():
    if run['best'] is not None:
      groups[run['group']].append(run['best']['test_accuracy'])
  if all(len(accuracies) < 2 for accuracies in groups.values()):
    return []
  lines = ['', 'Over repeats (independent studies, seeds seed .. seed + K - 1, same data '
           'split): the best trial\'s test accuracy.', '',
           '| group | repeats | mean | min | max |', '|---|---|---|---|---|']
  for group, accuracies in groups.items():
    lines.append(f'| {group} | {len(accuracies)} | {np.mean(accuracies):.3f} | '
                 f'{min(accuracies):.3f} | {max(accuracies):.3f} |')
  return lines


def _across_repeats_section(result: dict | None) -> list[str]:
  """The test across seeds (runner.across_repeats): accuracies per seed, ranks, p, power."""
  if not result:
    return []
  lines = ['', f'Do the groups differ across seeds? {result["test"]} on the best trials\' test '
           'accuracies, paired by seed (rank 1: the best group of a seed). With '
           f'{result["seeds"]} seeds the smallest attainable p is '
           f'{result["smallest_attainable_p"]:.3g} (when no two groups tie on a seed).', '',
           '| group | ' + ' | '.join(f'repeat {r}' for r in result['repeats']) + ' | mean rank |',
           '|---|' + '---|' * (len(result['repeats']) + 1)]
  for group in result['groups']:
    lines.append(f'| {group} | ' + ' | '.join(f'{a:.3f}' for a in result['test_accuracies'][group])
                 + f' | {result["mean_ranks"][group]:.2f} |')
  lines += ['', f'Statistic {result["statistic"]:.3g}, p = {result["p_value"]:.3g}.']
  if result['pairs']:
    lines += ['', '| a | b | Nemenyi p | differ |', '|---|---|---|---|']
    lines += [f'| {c["a"]} | {c["b"]} | {c["p_value"]:.3g} | '
              f'{"yes" if c["significant"] else "no"} |' for c in result['pairs']]
  return lines + ['', f'**{result["conclusion"]}**']


def _comparisons_table(comparisons: list) -> list[str]:
  if not comparisons:
    return []
  n = comparisons[0]['n_test']
  tested = sum(c['p_value'] is not None for c in comparisons)
  lines = ['', f'Paired tests between the best models (exact McNemar on the same {n} test '
           'reviews; "only a" counts reviews that a classifies right and b wrong). Each compares '
           'two trained models, one seed each, not their searches. "differ": Holm-adjusted p '
           f'< 0.05 over the {tested} tests; "no evidence of a difference" is not evidence that '
           'they are equally accurate. Models that classify every review alike are not tested.',
           '', '| a | b | repeat | test a | test b | only a | only b | p | p (Holm) | verdict |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for c in comparisons:
    lines.append(f'| {c["a"]} (trial {c["a_trial"]}) | {c["b"]} (trial {c["b_trial"]}) | '
                 f'{c["repeat"]} | {c["a_test_accuracy"]:.3f} | {c["b_test_accuracy"]:.3f} | '
                 f'{c["only_a"]} | {c["only_b"]} | {_p(c["p_value"])} | {_p(c["p_holm"])} | '
                 f'{c["verdict"]} |')
  return lines


def _p(p_value: float | None) -> str:
  return '-' if p_value is None else f'{p_value:.3g}'


def compression_text(compression: dict) -> str:
  """'Q4.4 fixed point (8 bits, 4 fractional) on Dense inputs, weights, biases; 50% of
  weights pruned per tensor; ...' from a results.json `compression` record."""
  numerics = compression['numerics']
  if numerics['engine'] == 'fixed':
    tensors = [t for t in ('inputs', 'weights', 'biases') if numerics[t]]
    text = (f'{numerics["format"]} fixed point ({numerics["width"]} bits, '
            f'{numerics["frac_width"]} fractional) on Dense {", ".join(tensors)}')
  else:
    text = f'{numerics["engine"]} {numerics["format"]}'
  text += (f'; {compression["weight_sparsity"]:.0%} of weights pruned '
           f'({compression["prune_scope"]})')
  if compression['activation_sparsity']:
    text += (f'; {compression["activation_sparsity"]:.0%} of Dense inputs pruned, one '
             f'threshold per {compression["activation_prune_scope"]}')
  return text + f'; post-compression training {compression["retrain_epochs"]:g} epoch(s)'


def shape_text(arch: dict) -> str:
  """'L/H/d/ff, number of identity layers' of an architecture record."""
  return (f'{arch["num_layers"]}/{arch["num_heads"]}/{arch["hidden_size"]}/'
          f'{arch["intermediate_size"]}, {len(arch["identity"])}')
