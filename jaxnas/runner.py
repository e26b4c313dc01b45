"""Runs a workflow end to end: studies, post-search compression, results.json and figures."""

import collections
import dataclasses
import itertools
import json
import os
import signal
import threading

import ml_collections

from jaxnas import (checkpoints, config_checks, distributed, objectives, oneshot, plots,
                    quantization, report, samplers, search, search_space, sensitivity, stats,
                    summary, train, unused_settings, workers, workflows)
from jaxnas.errors import UserError
from jaxnas.models import BertClassifier

# One baseline study per sampler; one study per workflow (baseline, compress, retrain).
COMPOSITE = ('samplers', 'compare')
LAB_SAMPLERS = ('grid', 'random', 'tpe')  # Task 1 of the lab.
ALL_WORKFLOWS = workflows.WORKFLOWS + COMPOSITE + ('sensitivity', 'oneshot', 'evaluate',
                                                   'engines', 'report')
CONFIG_FILE = 'config.json'
SIGNIFICANCE = 0.05  # Level of the paired tests between studies' best models.


@dataclasses.dataclass(frozen=True)
class RunSpec:
  workflow: str
  sampler: str
  n_trials: int
  workdir: str
  storage: str
  study_name: str
  checkpoint: str = ''
  repeats: int = 1  # Independent studies per group, seeds config.seed + 0 .. repeats - 1.
  trials_in_parallel: str = '1'  # Trials at once on this host (`train.device_groups`).
  # What the command line set, as typed (`--n_trials`, `--config.data.train_path`): a setting
  # that the run would ignore is refused (unused_settings.py).
  given: tuple[str, ...] = ()


class StopSignals:
  """SIGTERM (a preemption) and SIGINT (Ctrl-C) ask the run to stop: training checkpoints
  after its current step and the unfinished trial is queued to run again. A second signal
  stops at once."""

  def __init__(self):
    self._event = threading.Event()

  def install(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    if self._event.is_set():
      raise KeyboardInterrupt
    self._event.set()

  def requested(self) -> bool:
    return self._event.is_set()


def run(spec: RunSpec, config, stop_requested=lambda: False) -> dict:
  if spec.workflow not in ALL_WORKFLOWS:
    raise UserError(f'unknown workflow {spec.workflow!r}; use one of {", ".join(ALL_WORKFLOWS)}')
  config_checks.validate_config(config)
  unused_settings.check(spec.workflow, config, spec.given)
  if spec.workflow == 'evaluate':
    return evaluate_saved_model(spec.checkpoint, config)
  if spec.workflow == 'engines':
    return compare_engines_on_saved_model(spec.checkpoint, config)
  if spec.workflow == 'report':  # Reads the workdir; never writes to it but the report.
    path = report.write_report(spec.workdir)
    print(f'report: {path}')
    return {'report': path}
  if spec.n_trials < 1:
    raise UserError(f'--n_trials must be at least 1, got {spec.n_trials}')
  if spec.repeats < 1:
    raise UserError(f'--repeats must be at least 1, got {spec.repeats}')
  # Reject an unknown sampler or a bad search space before any work.
  samplers.make_sampler(spec.sampler, config.seed,
                        search_space.validate_space(config.search.space))
  samplers.make_pruner(config.search.pruner)
  device_groups = train.device_groups(spec.trials_in_parallel)
  goals = objectives.Objectives.parse(config.search.objectives, config.search.max_model_bytes)
  leader = distributed.is_leader()  # Process 0 alone reads and writes results and the study.
  if leader:
    check_workdir_config(spec.workdir, config)
  storage = spec.storage or workers.default_storage(spec.workdir)
  studies = planned_studies(spec)
  results_path = os.path.join(spec.workdir, 'results.json')
  previous = read_results(results_path, spec.workflow) if leader else {}
  if spec.workflow != 'oneshot' and distributed.broadcast_json(
      leader and already_complete(spec, storage, studies, previous)):
    return {'workflow': spec.workflow, 'storage': storage, 'runs': previous}
  # Nothing is written before the data and the storage have passed their checks: a refused
  # command leaves no workdir behind (a typo in a path used to leave a config.json that then
  # refused the corrected command). oneshot.run loads the data again, and says so.
  splits = workflows.load_data(config.data, announce=leader and spec.workflow != 'oneshot')
  if leader and spec.storage:  # The default storage is a file the workdir will hold.
    for planned in studies:
      workers.open_study(storage, planned.study_name, None, goals.directions)
  if leader:
    write_workdir_config(spec.workdir, config)
  if spec.workflow == 'oneshot':  # One weight-sharing supernet instead of a trial each.
    return oneshot.run(spec, config, stop_requested)
  if config.compilation_cache_dir:
    workflows.use_compilation_cache(config.compilation_cache_dir)
  exp = workflows.prepare_experiment(config, show_progress=leader, stop_requested=stop_requested,
                                    devices=device_groups[0] if len(device_groups) > 1 else None,
                                    splits=splits)
  results = {'workflow': spec.workflow, 'storage': storage, 'runs': {}}
  writes_final = False
  for planned in studies:
    repeat_exp = exp.with_seed(config.seed + planned.repeat)

    def study_results(study, planned=planned, repeat_exp=repeat_exp):
      return {**search.study_results(study, planned.workflow, planned.sampler, spec.workdir,
                                     goals, repeat_exp, planned.identity_choices),
              'group': planned.group, 'repeat': planned.repeat}

    def save(study, planned=planned, study_results=study_results):
      results['runs'][planned.name] = study_results(study)
      write_results(results_path, results)

    study = search.run_study(repeat_exp, planned.workflow, planned.sampler, spec.n_trials,
                             storage, planned.study_name, spec.workdir, on_trial_done=save,
                             identity_choices=planned.identity_choices,
                             device_groups=device_groups)
    if leader:
      results['runs'][planned.name] = study_results(study)
      writes_final = workers.writes_final_results(study)
  if not distributed.broadcast_json(writes_final):
    if leader:
      print('the study is complete; the worker that finished its last trial writes the final '
            'results and figures (in its own --workdir)')
    return results
  if spec.workflow == 'sensitivity':  # Evaluations only: the leader alone scores.
    if leader:
      run_results = results['runs'][studies[0].name]
      results['sensitivity'] = sensitivity.score_trials(
          exp, [t for t in run_results['trials'] if t['state'] == 'COMPLETE'], spec.workdir)
      write_outputs(spec, results, studies)
    return results
  for planned in studies:
    if planned.workflow != 'baseline' or spec.workflow == 'samplers':
      continue
    best, done = distributed.broadcast_json(
        (results['runs'][planned.name]['best'],
         previous.get(planned.name, {}).get('post_compression')) if leader else None)
    if best is not None:  # Trains: every process takes part.
      post_compression = compress_best(exp.with_seed(config.seed + planned.repeat), best, done)
      if leader:
        results['runs'][planned.name]['post_compression'] = post_compression
  if leader:
    if len({planned.group for planned in studies}) > 1:
      results['comparisons'] = paired_comparisons(results['runs'])
      results['across_repeats'] = across_repeats(results['runs'], spec.workflow)
    write_outputs(spec, results, studies)
  return results


def write_outputs(spec: RunSpec, results: dict, studies: list):
  """The final results.json, figures and summary.md, and where they are (and how to reload
  each best model)."""
  results_path = os.path.join(spec.workdir, 'results.json')
  write_results(results_path, results)
  figures = draw_figures(spec, results)
  table = summary.summary_markdown(results)
  if 'sensitivity' in results:
    table = '\n'.join([table, *sensitivity.summary_lines(results['sensitivity'])])
  summary_path = os.path.join(spec.workdir, 'summary.md')
  with open(summary_path, 'w') as f:
    f.write(table + '\n')
  print(table)
  print(f'\nresults: {results_path}\nsummary: {summary_path}\nfigures: {", ".join(figures)}')
  for planned in studies:
    run_results = results['runs'][planned.name]
    if run_results['best'] is not None:
      print(f'best model of study {planned.study_name!r}: {run_results["best_model_dir"]}\n'
            f'  reload it: python launch.py --workflow=evaluate '
            f'--checkpoint={_shortest_path(run_results["best_model_dir"])}')


def _shortest_path(path: str) -> str:
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


@dataclasses.dataclass(frozen=True)
class PlannedStudy:
  """One Optuna study of a run: a `group` (workflow or sampler) and one of its repeats."""
  name: str  # Its key under `runs` in results.json.
  group: str
  repeat: int  # Seeds config.seed + repeat; repeat 0 is the study a run without repeats has.
  workflow: str
  sampler: str
  study_name: str
  identity_choices: bool


def planned_studies(spec: RunSpec) -> list[PlannedStudy]:
  """The studies of a run, in the order they run: each group's repeats, group after group.

  `samplers` compares the grid, random and TPE samplers on one space, the grid's: the four
  sizes, every Linear/Identity choice Linear (as in the lab's grid; a grid over the
  identity choices would have 2^(4L+1) points per depth L).
  """
  if spec.workflow == 'samplers':
    groups = {sampler: ('baseline', sampler) for sampler in LAB_SAMPLERS}
  elif spec.workflow == 'compare':
    groups = {workflow: (workflow, spec.sampler) for workflow in workflows.WORKFLOWS}
  elif spec.workflow == 'sensitivity':
    groups = {'baseline': ('baseline', spec.sampler)}
  else:
    groups = {spec.workflow: (spec.workflow, spec.sampler)}
  studies = []
  for group, (workflow, sampler) in groups.items():
    for repeat in range(spec.repeats):
      suffix = f'-r{repeat}' if repeat else ''
      study_name = spec.study_name + (f'-{group}' if spec.workflow in COMPOSITE else '') + suffix
      studies.append(PlannedStudy(f'{group}{suffix}', group, repeat, workflow, sampler,
                                  study_name, identity_choices=spec.workflow != 'samplers'))
  return studies


def already_complete(spec: RunSpec, storage: str, studies: list, previous: dict) -> bool:
  """Whether every study of the run already has its trials and the workdir its results,
  summary and figure; if so, says so (a rerun then leaves the files as they are)."""
  figure = os.path.join(spec.workdir, figure_name(spec))
  outputs = [os.path.join(spec.workdir, name) for name in ('results.json', 'summary.md')]
  if not all(os.path.exists(path) for path in outputs + [figure]):
    return False
  counts = {planned.study_name: workers.finished_count(storage, planned.study_name)
            for planned in studies}
  if any(count < spec.n_trials for count in counts.values()) or set(previous) != {
      planned.name for planned in studies}:
    return False
  for name, count in counts.items():
    print(f"study '{name}' is complete ({count} of {spec.n_trials} trials); nothing to run")
  print(f'results: {outputs[0]}\nsummary: {outputs[1]}\nfigure: {figure}')
  return True


def read_results(path: str, workflow: str) -> dict:
  """The runs of an earlier results.json ({} if there is none)."""
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):  # Absent or damaged: it is written again from the study.
    return {}
  return saved.get('runs', {workflow: saved})


def write_results(path: str, results: dict):
  """Several studies keep one entry each under 'runs'; a single study is flat."""
  if len(results['runs']) == 1 and results['workflow'] not in COMPOSITE:
    (only,) = results['runs'].values()
    results = {**only, **{k: v for k, v in results.items() if k != 'runs'}}
  search.write_json(path, results)


def paired_comparisons(runs: dict) -> list[dict]:
  """Exact McNemar tests between the best models of each pair of groups, per repeat, on the
  shared test reviews (their per-example correctness, `test_correct`).

  Each test keeps its own `p_value`; `p_holm` is Holm-adjusted over all the tests of the run
  and `significant` reads it. A test compares two trained models (one seed each), not their
  searches: `across_repeats` does that. Best models that classify every review alike are not
  tested: `same model` when they have the same architecture (random and TPE share their
  start-up trials and seed), else `same predictions`.
  """
  comparisons = []
  by_repeat = collections.defaultdict(list)
  for name, run_results in runs.items():
    if run_results['best'] is not None:
      by_repeat[run_results['repeat']].append((name, run_results))
  for repeat, members in sorted(by_repeat.items()):
    for (name_a, a), (name_b, b) in itertools.combinations(members, 2):
      best_a, best_b = a['best'], b['best']
      test = stats.mcnemar_exact(stats.unpack_correct(best_a['test_correct']),
                                 stats.unpack_correct(best_b['test_correct']))
      comparisons.append({
          'a': name_a, 'b': name_b, 'repeat': repeat, 'a_trial': best_a['number'],
          'b_trial': best_b['number'], 'a_test_accuracy': best_a['test_accuracy'],
          'b_test_accuracy': best_b['test_accuracy'], 'n_test': best_a['n_test'], **test,
          'p_holm': None, 'significant': False,
          'verdict': ('same model' if best_a['architecture'] == best_b['architecture']
                      else 'same predictions')})
  tested = [c for c in comparisons if c['p_value'] is not None]
  for c, p_holm in zip(tested, stats.holm([c['p_value'] for c in tested])):
    c['p_holm'], c['significant'] = p_holm, p_holm < SIGNIFICANCE
    c['verdict'] = 'differ' if c['significant'] else 'no evidence of a difference'
  return comparisons


def across_repeats(runs: dict, workflow: str) -> dict | None:
  """Whether the groups' searches differ: `stats.across_seeds` on their best models' test
  accuracies, paired by seed, over the repeats where every group has a best model (None with
  fewer than two), and what it means in words (`conclusion`)."""
  accuracies = collections.defaultdict(dict)
  for run_results in runs.values():
    if run_results['best'] is not None:
      accuracies[run_results['group']][run_results['repeat']] = (
          run_results['best']['test_accuracy'])
  repeats = sorted(set.intersection(*(set(a) for a in accuracies.values()))) if len(
      accuracies) > 1 else []
  if len(repeats) < 2:
    return None
  result = {'repeats': repeats, 'test_accuracies': {
      group: [by_repeat[r] for r in repeats] for group, by_repeat in accuracies.items()}}
  result.update(stats.across_seeds(result['test_accuracies'], SIGNIFICANCE))
  return {**result, 'conclusion': across_repeats_conclusion(result, workflow)}


def across_repeats_conclusion(result: dict, workflow: str) -> str:
  """The across-seed test's result and its power in words: a test that cannot reach the
  level says so, and gives the command with enough repeats, rather than "no difference"."""
  n, k, p = result['seeds'], len(result['groups']), result['p_value']
  rerun = f'python launch.py --workflow={workflow} --repeats='
  if all(len(set(seed)) == 1 for seed in zip(*result['test_accuracies'].values())):
    return ('Cannot tell: on every seed the groups\' best models have the same test accuracy, '
            'so there is nothing to rank; if more repeats tie too, a harder task or more test '
            'reviews could separate them.')
  if result['smallest_attainable_p'] >= SIGNIFICANCE:
    return (f'Cannot tell: with {n} seeds of {k} groups no outcome of the test can give '
            f'p < {SIGNIFICANCE} (the smallest attainable p is '
            f'{result["smallest_attainable_p"]:.3g}), so p = {p:.3g} is no evidence either '
            f'way. {rerun}{result["seeds_needed"]} (other flags as before) is the fewest '
            'repeats that can, and then only if every seed ranks the groups alike; more '
            'repeats can detect less consistent differences.')
  if result['significant']:
    pairs = [f'{c["a"]} vs {c["b"]} (p = {c["p_value"]:.3g})' for c in result['pairs']
             if c['significant']]
    return (f'The groups differ across {n} seeds (p = {p:.3g}).' + (
        f' Pairs that differ: {", ".join(pairs)}.' if pairs else
        ' No single pair differs in the post-hoc test.' if result['pairs'] else ''))
  return (f'No evidence of a difference across {n} seeds (p = {p:.3g}): absence of evidence, '
          'not evidence that the groups are equal. With more repeats '
          f'({rerun}{2 * n}, other flags as before) smaller or less consistent differences '
          'can show.')


def compress_best(exp: workflows.Experiment, best: dict, previous: dict | None) -> dict:
  """Standard NAS + post compression: the `best` trial's float model, compressed with and
  without post-compression training (`previous` is reused when it is of the same trial)."""
  if previous and previous['trial'] == best['number']:
    return previous
  saved = checkpoints.load_model(best['model_dir'])
  arch = saved['architecture']
  trained = workflows.TrainedModel(exp.build_model(arch), saved['float_params'])
  return {'trial': best['number'], 'architecture': arch.to_dict(),
          **{key: best[key] for key in ('float_validation_accuracy', 'float_test_accuracy',
                                        'float_test_accuracy_interval', 'n_validation',
                                        'n_test')},
          **workflows.compress_and_score(exp, trained, retrain=True)}


def figure_name(spec: RunSpec) -> str:
  return {'samplers': 'samplers_best_so_far.png', 'compare': 'nas_comparison_curve.png',
          'sensitivity': 'sensitivity.png'}.get(spec.workflow, 'best_so_far.png')


def draw_figures(spec: RunSpec, results: dict) -> list[str]:
  """Writes the run's figures; returns their paths."""
  titles = {'samplers': 'Samplers (Task 1): baseline NAS', 'compare': 'NAS workflows (Task 2)'}
  paths = [os.path.join(spec.workdir, figure_name(spec))]
  if 'sensitivity' in results:
    plots.plot_sensitivity(results['sensitivity'], paths[0])
    paths.append(os.path.join(spec.workdir, 'best_so_far.png'))
  plots.plot_best_so_far(results['runs'], paths[-1],
                         titles.get(spec.workflow, f'{spec.workflow} / {spec.sampler}'))
  for run_name, run in results['runs'].items():
    if 'pareto_front' in run:
      points = [dict(accuracy=t['value'], model_bytes=t['model_bytes'], number=t['number'])
                for t in run['trials'] if t['state'] == 'COMPLETE']
      paths.append(os.path.join(spec.workdir, 'pareto_front.png' if len(results['runs']) == 1
                                else f'pareto_front_{run_name}.png'))
      plots.plot_pareto(points, paths[-1], max_model_bytes=run['max_model_bytes'],
                        n_validation=run['n_validation'],
                        majority=run['validation_majority_class_accuracy'])
  return paths


def _saved_config(config) -> dict:
  """The config as config.json keeps it: less the flags of each run, free to change on a
  rerun."""
  saved = json.loads(config.to_json_best_effort())
  for per_run in ('n_trials', 'sampler'):
    saved['search'].pop(per_run, None)
  return saved


def holds_search_run(workdir: str) -> bool:
  """Whether `workdir` holds anything of a search (a study, a trial's checkpoints or model,
  results) besides its config.json: a run refused or stopped before its work began leaves
  the config alone, and that config may be replaced."""
  return os.path.isdir(workdir) and any(
      name != CONFIG_FILE and not name.startswith(f'{CONFIG_FILE}.tmp')
      for name in os.listdir(workdir))


def check_workdir_config(workdir: str, config):
  """A workdir keeps the config its search was started with; another config there is an
  error. Writes nothing (`write_workdir_config` does, once every check has passed)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path) or not holds_search_run(workdir):
    return
  with open(path) as f:
    saved = json.load(f)
  current = _saved_config(config)
  if saved != current:
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise UserError(f'{workdir} holds a search run with a different config (sections differ: '
                    f'{", ".join(changed)}); use another --workdir')


def write_workdir_config(workdir: str, config):
  """Creates the workdir with its config.json (`check_workdir_config` has passed)."""
  os.makedirs(workdir, exist_ok=True)
  search.write_json(os.path.join(workdir, CONFIG_FILE), _saved_config(config))


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a finished run in `workdir` was started with (its config.json)."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return ml_collections.ConfigDict(json.load(f))


def _load_for_evaluation(checkpoint: str, config):
  if not checkpoint:
    raise UserError('this workflow needs --checkpoint=PATH (a model directory, e.g. '
                    'workdir/best_model/jaxnas)')
  saved = checkpoints.load_model(checkpoint)
  config = config.copy_and_resolve_references()
  # The splits the model was trained and scored on.
  config.data.update(saved.get('data', {}).get('config', {}))
  exp = workflows.prepare_experiment(config, tokenizer_path=saved['tokenizer_path'])
  model = BertClassifier(saved['architecture'], **saved['model'])
  return saved, exp, workflows.TrainedModel(model, saved['float_params'])


def evaluate_saved_model(checkpoint: str, config) -> dict:
  """Reloads an exported model and scores its float and int8 forms on the test split."""
  saved, exp, trained = _load_for_evaluation(checkpoint, config)
  result = {'n_test': len(exp.test_split), 'label_names': list(exp.label_names),
            **workflows.test_record(workflows.score_float(exp, trained), 'float_')}
  if saved['int8'] is not None:
    metrics = saved['metrics']
    if 'numerics' in metrics:  # Served as it was made, whatever the config says.
      exp = dataclasses.replace(exp, engine=quantization.engine_of(metrics['numerics']))
    compressed_model = trained.model.clone(
        activation_sparsity=metrics.get('activation_sparsity',
                                        config.compression.activation_sparsity),
        activation_prune_scope=metrics.get('activation_prune_scope', 'token'))
    result.update(workflows.test_record(
        workflows.score_served_int8(exp, compressed_model, saved['int8']), 'int8_'),
                  numerics=exp.engine.describe())
  result['reported'] = {k: saved['metrics'].get(k)
                        for k in ('float_test_accuracy', 'int8_test_accuracy', 'n_test')}
  print(json.dumps(result, indent=2))
  return result


def compare_engines_on_saved_model(checkpoint: str, config) -> dict:
  """Compresses one saved float model with every quantization engine (same masks), and
  scores each served int8 model before and after that engine's post-compression training."""
  _, exp, trained = _load_for_evaluation(checkpoint, config)
  result = workflows.compare_engines(exp, trained, retrain=True)
  print(json.dumps(result, indent=2))
  return result
