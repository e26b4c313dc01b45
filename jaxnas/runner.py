"""Runs a workflow end to end: studies, post-search compression, results.json and figures."""

import dataclasses
import json
import os
import signal
import threading

from jaxnas import (checkpoints, distributed, objectives, plots, report, search, search_space,
                    workflows)
from jaxnas.errors import UserError
from jaxnas.models import BertClassifier

# One baseline study per sampler; one study per workflow (baseline, compress, retrain).
COMPOSITE = ('samplers', 'compare')
LAB_SAMPLERS = ('grid', 'random', 'tpe')  # Task 1 of the lab.
ALL_WORKFLOWS = workflows.WORKFLOWS + COMPOSITE + ('evaluate', 'engines', 'report')
CONFIG_FILE = 'config.json'


@dataclasses.dataclass(frozen=True)
class RunSpec:
  workflow: str
  sampler: str
  n_trials: int
  workdir: str
  storage: str
  study_name: str
  checkpoint: str = ''


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
  # Reject an unknown sampler or a bad search space before any work.
  search.make_sampler(spec.sampler, config.seed, search_space.validate_space(config.search.space))
  search.make_pruner(config.search.pruner)
  goals = objectives.Objectives.parse(config.search.objectives, config.search.max_model_bytes)
  os.makedirs(spec.workdir, exist_ok=True)
  leader = distributed.is_leader()  # Process 0 alone reads and writes results and the study.
  if leader:
    check_workdir_config(spec.workdir, config)
  if config.compilation_cache_dir:
    workflows.use_compilation_cache(config.compilation_cache_dir)
  exp = workflows.prepare_experiment(config, show_progress=leader, stop_requested=stop_requested)
  storage = spec.storage or search.default_storage(spec.workdir)
  if spec.workflow == 'samplers':
    runs = {sampler: ('baseline', sampler) for sampler in LAB_SAMPLERS}
  elif spec.workflow == 'compare':
    runs = {workflow: (workflow, spec.sampler) for workflow in workflows.WORKFLOWS}
  else:
    runs = {spec.workflow: (spec.workflow, spec.sampler)}

  results = {'workflow': spec.workflow, 'storage': storage, 'runs': {}}
  results_path = os.path.join(spec.workdir, 'results.json')
  previous = read_results(results_path, spec.workflow) if leader else {}
  writes_final = False
  for name, (workflow, sampler) in runs.items():
    study_name = f'{spec.study_name}-{name}' if spec.workflow in COMPOSITE else spec.study_name

    def save(study, name=name, workflow=workflow, sampler=sampler):
      results['runs'][name] = search.study_results(study, workflow, sampler, spec.workdir, goals)
      write_results(results_path, spec.workflow, results)

    study = search.run_study(exp, workflow, sampler, spec.n_trials, storage, study_name,
                             spec.workdir, on_trial_done=save)
    if leader:
      results['runs'][name] = search.study_results(study, workflow, sampler, spec.workdir, goals)
      writes_final = search.writes_final_results(study)
  if not distributed.broadcast_json(writes_final):
    if leader:
      print('the study is complete; the worker that finished its last trial writes the final '
            'results and figures (in its own --workdir)')
    return results
  for name, (workflow, _) in runs.items():
    if workflow != 'baseline' or spec.workflow == 'samplers':
      continue
    best, done = distributed.broadcast_json(
        (results['runs'][name]['best'], previous.get(name, {}).get('post_compression'))
        if leader else None)
    if best is not None:
      post_compression = compress_best(exp, best, done)  # Trains: every process takes part.
      if leader:
        results['runs'][name]['post_compression'] = post_compression
  if not leader:
    return results
  write_results(results_path, spec.workflow, results)
  draw_figures(spec, results)
  table = comparison_table(results)
  print(table)
  with open(os.path.join(spec.workdir, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  return results


def read_results(path: str, workflow: str) -> dict:
  """The runs of an earlier results.json of this workflow ({} if there is none)."""
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):  # Absent or damaged: it is written again from the study.
    return {}
  return saved.get('runs', {}) if workflow in COMPOSITE else {workflow: saved}


def write_results(path: str, workflow: str, results: dict):
  """Composite workflows keep one entry per study under 'runs'; a single study is flat."""
  if workflow not in COMPOSITE:
    (only,) = results['runs'].values()
    results = {**only, 'workflow': workflow, 'storage': results['storage']}
  search.write_json(path, results)


def compress_best(exp: workflows.Experiment, best: dict, previous: dict | None) -> dict:
  """Standard NAS + post compression: the `best` trial's float model, compressed with and
  without post-compression training (`previous` is reused when it is of the same trial)."""
  if previous and previous['trial'] == best['number']:
    return previous
  saved = checkpoints.load_model(best['model_dir'])
  arch = saved['architecture']
  trained = workflows.TrainedModel(exp.build_model(arch), saved['float_params'],
                                   best['float_accuracy'])
  compressed = workflows.compress(exp, trained)
  retrained, _ = workflows.post_compression_training(exp, compressed)
  return {'trial': best['number'], 'architecture': arch.to_dict(),
          'float_accuracy': best['float_accuracy'],
          'compressed_accuracy': compressed.accuracy,
          **{f'retrained_{k}': v for k, v in workflows.compression_record(retrained).items()}}


def draw_figures(spec: RunSpec, results: dict):
  curves = {name: r['best_so_far'] for name, r in results['runs'].items()}
  if spec.workflow == 'samplers':
    name, title, ylabel = 'samplers_best_so_far.png', 'Sampler comparison', 'best test accuracy'
  elif spec.workflow == 'compare':
    name, title = 'nas_comparison_curve.png', 'NAS workflows: best objective so far'
    ylabel = 'best accuracy (baseline: float; others: int8 + pruned)'
  else:
    name, title = 'best_so_far.png', f'{spec.workflow} / {spec.sampler}'
    ylabel = 'best objective so far'
  path = os.path.join(spec.workdir, name)
  plots.plot_best_so_far(curves, path, title, ylabel)
  print(f'figure: {path}')
  for name, run in results['runs'].items():
    if 'pareto_front' in run:
      points = [dict(accuracy=t['value'], model_bytes=t['model_bytes'], number=t['number'])
                for t in run['trials'] if t['state'] == 'COMPLETE']
      path = os.path.join(spec.workdir, 'pareto_front.png' if len(results['runs']) == 1
                          else f'pareto_front_{name}.png')
      plots.plot_pareto(points, path, max_model_bytes=run['max_model_bytes'])
      print(f'figure: {path}')


def comparison_table(results: dict) -> str:
  """A Markdown table of the best trial of each study."""
  lines = ['| study | best trial | objective | architecture (L/H/d/ff, identity) | float acc '
           '| int8+pruned acc | sparsity | int8 bytes | float bytes |',
           '|---|---|---|---|---|---|---|---|---|']
  for name, run_results in results['runs'].items():
    best = run_results['best']
    if best is None:
      lines.append(f'| {name} | no feasible completed trial |')
      continue
    arch = best['architecture']
    lines.append(
        f'| {name} | {best["number"]} | {best["value"]:.4f} | {arch["num_layers"]}/'
        f'{arch["num_heads"]}/{arch["hidden_size"]}/{arch["intermediate_size"]}, '
        f'{len(arch["identity"])} | {best["float_accuracy"]:.4f} | '
        f'{best["compressed_accuracy"]:.4f} | {best["sparsity"]:.3f} | {best["model_bytes"]:,} | '
        f'{best["float_model_bytes"]:,} |')
    post = run_results.get('post_compression')
    if post:
      lines.append(
          f'| {name} + post compression | {post["trial"]} | - | same | '
          f'{post["float_accuracy"]:.4f} | {post["compressed_accuracy"]:.4f} (no retrain), '
          f'{post["retrained_compressed_accuracy"]:.4f} (retrained) | '
          f'{post["retrained_sparsity"]:.3f} | {post["retrained_model_bytes"]:,} | - |')
  return '\n'.join(lines)


def check_workdir_config(workdir: str, config):
  """A workdir keeps the config it was started with; another config there is an error."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  for per_run in ('n_trials', 'sampler'):  # Flags of each run, free to change on a rerun.
    current['search'].pop(per_run, None)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != current:
      changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
      raise UserError(f'{workdir} holds a search run with a different config (sections differ: '
                      f'{", ".join(changed)}); use another --workdir')
  else:
    search.write_json(path, current)


def _load_for_evaluation(checkpoint: str, config):
  if not checkpoint:
    raise UserError('this workflow needs --checkpoint=PATH (a model directory, e.g. '
                    'workdir/best_model/jaxnas)')
  saved = checkpoints.load_model(checkpoint)
  exp = workflows.prepare_experiment(config, tokenizer_path=saved['tokenizer_path'])
  model = BertClassifier(saved['architecture'], **saved['model'])
  accuracy = exp.trainer.evaluate(model.apply, {'params': saved['float_params']},
                                  exp.test_split)['accuracy']
  return saved, exp, workflows.TrainedModel(model, saved['float_params'], accuracy)


def evaluate_saved_model(checkpoint: str, config) -> dict:
  """Reloads an exported model and scores its float and int8 forms on the test split."""
  saved, exp, trained = _load_for_evaluation(checkpoint, config)
  result = {'float_accuracy': trained.accuracy}
  if saved['int8'] is not None:
    compressed_model = trained.model.clone(
        activation_sparsity=config.compression.activation_sparsity)
    result['compressed_accuracy'] = workflows.score_served_int8(
        exp, compressed_model, saved['int8'])['accuracy']
  result['reported'] = {k: saved['metrics'].get(k)
                        for k in ('float_accuracy', 'compressed_accuracy')}
  print(json.dumps(result, indent=2))
  return result


def compare_engines_on_saved_model(checkpoint: str, config) -> dict:
  """Compresses one saved float model with every quantization engine (same masks), and
  scores each served int8 model before and after that engine's post-compression training."""
  _, exp, trained = _load_for_evaluation(checkpoint, config)
  result = workflows.compare_engines(exp, trained, retrain=True)
  print(json.dumps(result, indent=2))
  return result
