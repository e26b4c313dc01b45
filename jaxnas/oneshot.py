"""The one-shot workflow (`--workflow=oneshot`): train one weight-sharing supernet, then search
its sub-networks, each scored as its served int8 model with inherited weights.

  1. Supernet training (`supernet.py`): sandwich rule, in-place distillation, QAT int8 and 50%
     magnitude masks per sub-network slice; checkpointed and resumed like a trial.
  2. Search: the configured Optuna sampler proposes architectures of the search space; each
     is sliced out of the supernet (`elastic.py`), pruned and converted exactly as the
     `compress` workflow does a trained model (`workflows.compress`), and its served int8
     model is scored on the validation split. No training: seconds per trial.
  3. The `oneshot.top_k` best on validation are fine-tuned briefly (QAT with their masks, from
     the inherited weights) or trained from scratch by the `retrain` workflow
     (`oneshot.finalize`); the best of them on validation is selected, and the test split
     scores each of them once.
  4. Ranking check: `oneshot.ranking_archs` architectures spread over the space are trained
     standalone by the `retrain` workflow; Kendall's tau between their one-shot estimates and
     their standalone validation accuracies, with a bootstrap interval, and the wall time of
     both. Set it to 0 to skip.

Every stage keeps what it finished in the workdir (checkpoints, the Optuna study, JSON files
under `oneshot/`), so rerunning the command after an interruption continues where it stopped.
"""

import dataclasses
import hashlib
import json
import os
import time

import flax
import jax
import numpy as np
import scipy.stats

from jaxnas import (checkpoints, elastic, objectives, plots, pruning, quantization, samplers,
                    search, search_space, stats, supernet, workers, workflows)
from jaxnas.errors import UserError
from jaxnas.models import Architecture

BOOTSTRAP_SAMPLES = 2000


def arch_key(arch: Architecture) -> str:
  return hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def spread_architectures(space: dict, count: int, seed: int) -> list[Architecture]:
  """`count` architectures spread over `space`: each size's options in equal shares, shuffled
  independently (a Latin hypercube over the option indices), each square Dense Identity with
  probability 1/2 (as the search's prior)."""
  rng = np.random.default_rng([seed, 3])
  columns = [rng.permutation(np.resize(space[name], count)) for name in search_space.SIZE_NAMES]
  return [supernet.random_identity(Architecture(*(int(c[i]) for c in columns)), rng)
          for i in range(count)]


class Store:
  """JSON records of finished work under `workdir/oneshot/` (written atomically)."""

  def __init__(self, workdir: str):
    self.directory = os.path.join(workdir, 'oneshot')
    os.makedirs(self.directory, exist_ok=True)

  def get(self, name: str):
    path = os.path.join(self.directory, f'{name}.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def put(self, name: str, record):
    search.write_json(os.path.join(self.directory, f'{name}.json'), record)
    return record


def inherited(exp, params, arch: Architecture) -> workflows.TrainedModel:
  model = exp.build_model(arch)
  return workflows.TrainedModel(model, elastic.slice_params(params, model))


def score_candidate(exp, params, arch: Architecture) -> dict:
  """The served int8 model of `arch` with inherited weights, scored on validation: built,
  converted and compiled for this architecture."""
  start = time.perf_counter()
  compressed = workflows.compress(exp, inherited(exp, params, arch))
  return {'validation_accuracy': compressed.accuracy, **workflows.compression_record(compressed),
          'n_validation': len(exp.validation_split), 'architecture': arch.to_dict(),
          'trial_seconds': time.perf_counter() - start}


class ShapeScorer:
  """`score_candidate` with one conversion and one evaluation program per size shape.

  Built for each architecture, a served model compiles both programs anew for every identity
  pattern, most of a small candidate's scoring time on a 2-core CPU (README: One-shot search).
  Here the all-Linear model of the candidate's size shape is pruned and converted, and runs
  with the candidate's Linear/Identity choices as data (`BertClassifier`'s `gates`): a skipped
  Dense's output is replaced by its input, so the logits are the architecture's own, and its
  size and sparsity count the architecture's layers only (tests/test_elastic.py). That holds
  where every tensor is pruned on its own (local scope) and latency is not an objective (the
  shape's program also computes the skipped Dense layers): otherwise `exact` is False and each
  candidate goes to `score_candidate`.
  """

  def __init__(self, exp, params, goals: objectives.Objectives):
    self.exp, self.params = exp, params
    self.exact = (exp.config.compression.prune_scope == 'local'
                  and 'latency' not in goals.names)
    self._apply_fns = {}

  def _serving_apply(self, model):
    if model not in self._apply_fns:
      serve = self.exp.engine.serving_apply(model)
      self._apply_fns[model] = lambda variables, input_ids, deterministic=True: serve(
          variables['stored'], input_ids, deterministic, gates=variables['gates'])
    return self._apply_fns[model]

  def served(self, arch: Architecture) -> tuple:
    """(apply_fn, variables) of `arch`'s served int8 model through its shape's programs, and
    the model's record: its sparsity and bytes."""
    shape = elastic.size_shape(arch)
    model, params, _ = workflows.prune(self.exp, inherited(self.exp, self.params, shape))
    stored = self.exp.engine.convert(model, params)
    gates = dict(zip(elastic.gate_names(shape), elastic.gates_of(arch)))
    used = lambda path: not any(f'/{name}/' in f'/{path}' for name in arch.identity)
    return self._serving_apply(model), {'stored': stored, 'gates': gates}, {
        'activation_sparsity': model.activation_sparsity,
        'activation_prune_scope': model.activation_prune_scope,
        'sparsity': pruning.measured_sparsity(_keep_paths(params, used))['overall'],
        'model_bytes': quantization.tree_bytes(_keep_paths(stored, used))}

  def score(self, arch: Architecture) -> dict:
    if not self.exact:
      return score_candidate(self.exp, self.params, arch)
    start = time.perf_counter()
    apply_fn, variables, record = self.served(arch)
    metrics = self.exp.trainer.evaluate(apply_fn, variables, self.exp.validation_split,
                                        'validation int8', int8_dots=self.exp.engine.int8_dots)
    return {'validation_accuracy': metrics['accuracy'],
            'int8_validation_accuracy': metrics['accuracy'], **record,
            'n_validation': len(self.exp.validation_split), 'architecture': arch.to_dict(),
            'trial_seconds': time.perf_counter() - start}


def _keep_paths(tree, keep) -> dict:
  """{'/'-joined path: leaf} of `tree`'s leaves whose path `keep` accepts."""
  return {path: leaf for path, leaf in flax.traverse_util.flatten_dict(tree, sep='/').items()
          if keep(path)}


def run_search(exp, scorer: ShapeScorer, spec, goals: objectives.Objectives, space: dict):
  """Optuna trials over the supernet until `spec.n_trials` are complete; returns the study."""
  study = workers.open_study(workers.default_storage(spec.workdir) if not spec.storage
                             else spec.storage, spec.study_name, None, goals.directions)
  study.sampler = samplers.make_sampler(
      spec.sampler, samplers.sampler_seed(exp.config.seed, len(study.trials)), space)
  done = len(workers.completed(study))
  for number in range(done, spec.n_trials):
    if exp.stop_requested():
      raise KeyboardInterrupt
    trial = study.ask()
    arch = search_space.suggest_architecture(trial, space)
    search.record_architecture(trial, arch)
    record = scorer.score(arch)
    for key, value in record.items():
      trial.set_user_attr(key, value)
    if goals.max_model_bytes:
      trial.set_constraint('max_model_bytes', goals.constraints(record))
    study.tell(trial, goals.values(record['validation_accuracy'], record))
    print(f'one-shot trial {number}: validation int8 (inherited, n={record["n_validation"]}) '
          f'{record["validation_accuracy"]:.3f} | {describe(arch)} '
          f'{record["model_bytes"]:,} bytes {record["trial_seconds"]:.1f}s', flush=True)
  return study


def describe(arch: Architecture) -> str:
  return (f'L={arch.num_layers} H={arch.num_heads} d={arch.hidden_size} '
          f'ff={arch.intermediate_size} identity={len(arch.identity)}')


def finalize(exp, params, arch: Architecture, how: str, checkpoint_dir: str) -> tuple[dict, object]:
  """Brief QAT from the inherited weights ('finetune') or a `retrain` trial ('scratch');
  the served int8 model scored on validation and, once, on test."""
  start = time.perf_counter()
  if how == 'finetune':
    config = exp.config.copy_and_resolve_references()
    config.compression.retrain_epochs = exp.config.oneshot.finetune_epochs
    compressed = workflows.compress(exp, inherited(exp, params, arch))
    compressed, _ = workflows.post_compression_training(dataclasses.replace(exp, config=config),
                                                        compressed, checkpoint_dir)
    float_params = compressed.params
  else:
    _, _, trained, compressed = workflows.run_trial(exp, arch, 'retrain', checkpoint_dir)
    float_params = trained.params
  test = workflows.score_served_int8(exp, compressed.model, compressed.int8)
  record = {'architecture': arch.to_dict(), 'finalize': how,
            'validation_accuracy': compressed.accuracy,
            **workflows.compression_record(compressed), **workflows.test_record(test),
            'n_validation': len(exp.validation_split), 'n_test': len(exp.test_split),
            'test_correct': stats.pack_correct(test['correct']),
            'seconds': time.perf_counter() - start}
  return record, (compressed, float_params)


def top_architectures(study, goals: objectives.Objectives, k: int) -> list[dict]:
  """The `k` feasible complete trials of highest validation accuracy, distinct architectures."""
  ranked = sorted((t for t in workers.completed(study) if goals.feasible(t)),
                  key=lambda t: (-t.values[0], t.number))
  chosen, seen = [], set()
  for t in ranked:
    key = arch_key(Architecture.from_dict(t.user_attrs['architecture']))
    if key not in seen:
      seen.add(key)
      chosen.append({'number': t.number, 'one_shot_validation_accuracy': t.values[0],
                     'architecture': t.user_attrs['architecture']})
    if len(chosen) == k:
      break
  return chosen


def kendall_tau(estimates, standalone, seed: int) -> dict:
  """Kendall's tau-b (scipy) with a 95% percentile bootstrap interval over architectures."""
  estimates, standalone = np.asarray(estimates), np.asarray(standalone)
  tau, p_value = scipy.stats.kendalltau(estimates, standalone)
  rng = np.random.default_rng([seed, 4])
  draws = []
  for _ in range(BOOTSTRAP_SAMPLES):
    index = rng.integers(len(estimates), size=len(estimates))
    value = scipy.stats.kendalltau(estimates[index], standalone[index])[0]
    if np.isfinite(value):  # A resample of all-tied values has no tau.
      draws.append(value)
  low, high = np.percentile(draws, (2.5, 97.5)) if draws else (np.nan, np.nan)
  return {'tau': float(tau), 'tau_interval': [float(low), float(high)],
          'p_value': float(p_value), 'n_architectures': len(estimates),
          'bootstrap_samples': len(draws)}


def train_standalone(exp, arch: Architecture, store: Store, workdir: str) -> dict:
  """The `retrain` workflow's trial of `arch` (kept in `store`: a rerun reuses it)."""
  key = arch_key(arch)
  record = store.get(f'standalone_{key}')
  if record is None:
    value, trial, _, _ = workflows.run_trial(
        exp, arch, 'retrain', os.path.join(os.path.abspath(workdir), 'checkpoints',
                                           'standalone', key))
    record = store.put(f'standalone_{key}', {
        'validation_accuracy': value, 'trial_seconds': trial['trial_seconds'],
        **{k: trial[k] for k in ('test_accuracy', 'test_accuracy_interval',
                                 'float_validation_accuracy', 'model_bytes', 'n_test')}})
  return record


def ranking_check(exp, scorer: ShapeScorer, store: Store, workdir: str) -> dict:
  """One-shot estimates vs standalone `retrain` trials of architectures spread over the space."""
  archs = spread_architectures(search_space.validate_space(exp.config.search.space),
                               exp.config.oneshot.ranking_archs, exp.config.seed)
  rows = []
  for i, arch in enumerate(archs):
    key = arch_key(arch)
    estimate = store.get(f'estimate_{key}') or store.put(
        f'estimate_{key}', scorer.score(arch))
    standalone = train_standalone(exp, arch, store, workdir)
    print(f'ranking check {i + 1}/{len(archs)}: {describe(arch)}: one-shot '
          f'{estimate["validation_accuracy"]:.3f}, standalone retrain '
          f'{standalone["validation_accuracy"]:.3f} ({standalone["trial_seconds"]:.0f}s)',
          flush=True)
    rows.append({'architecture': arch.to_dict(),
                 'one_shot_validation_accuracy': estimate['validation_accuracy'],
                 'standalone_validation_accuracy': standalone['validation_accuracy'],
                 'standalone_trial_seconds': standalone['trial_seconds'],
                 'standalone_test_accuracy': standalone['test_accuracy'],
                 'standalone_test_accuracy_interval': standalone['test_accuracy_interval']})
  return {**kendall_tau([r['one_shot_validation_accuracy'] for r in rows],
                        [r['standalone_validation_accuracy'] for r in rows], exp.config.seed),
          'n_validation': len(exp.validation_split), 'architectures': rows}


def cost_comparison(phases: dict, ranking: dict, n_trials: int) -> dict:
  """Wall time of the one-shot search against `retrain` at the same number of architectures
  (its mean standalone trial time, measured in the ranking check, times `n_trials`), and the
  test accuracy `retrain` reaches in the one-shot run's wall time: the best on validation of
  the ranking check's trials that finish within it, in the order they ran."""
  one_shot = sum(phases[name]['seconds'] for name in ('supernet', 'search', 'finalists'))
  rows = ranking['architectures']
  seconds = [r['standalone_trial_seconds'] for r in rows]
  finished = [r for r, t in zip(rows, np.cumsum(seconds)) if t <= one_shot]
  best = max(finished, key=lambda r: r['standalone_validation_accuracy'], default=None)
  return {'one_shot_seconds': one_shot, 'one_shot_architectures_scored': n_trials,
          'retrain_seconds_per_architecture': float(np.mean(seconds)),
          'retrain_seconds_at_same_architectures': float(np.mean(seconds)) * n_trials,
          'retrain_architectures_in_one_shot_seconds': len(finished),
          'retrain_best_in_one_shot_seconds': best}


def timed(store: Store, name: str, fn):
  """Runs `fn` unless `store` recorded its phase; the phase's record with its `seconds`."""
  record = store.get(f'phase_{name}')
  if record is None:
    start = time.perf_counter()
    with workflows.CompileClock() as clock:
      record = fn() or {}
    record.update(seconds=time.perf_counter() - start, compile_seconds=clock.seconds)
    store.put(f'phase_{name}', record)
  return record


def run(spec, config, stop_requested=lambda: False) -> dict:
  """The whole workflow; writes results.json, summary.md and figures to `spec.workdir`."""
  cfg = config.oneshot
  if spec.sampler == 'grid' or jax.process_count() > 1:
    raise UserError('the one-shot workflow runs in one process, with a sampler other than grid')
  space = search_space.validate_space(config.search.space)
  goals = objectives.Objectives.parse(config.search.objectives, config.search.max_model_bytes)
  if config.compilation_cache_dir:
    workflows.use_compilation_cache(config.compilation_cache_dir)
  exp = workflows.prepare_experiment(config, stop_requested=stop_requested)
  store = Store(spec.workdir)
  trainer = supernet.SupernetTrainer(exp, space, cfg.num_random, cfg.train_shapes)
  trained = {}

  def train_supernet():
    state, losses, start_step = trainer.fit(
        os.path.join(os.path.abspath(spec.workdir), 'checkpoints', 'supernet'), cfg.epochs)
    trained['params'] = jax.device_get(state.params)
    return {'steps': int(state.step), 'largest_only_steps': trainer.largest_only_steps,
            'resumed_from_step': start_step, 'losses': losses,
            'programs_compiled': len(trainer.compiled_shapes),
            'shapes_compiled': [a.to_dict() for a in trainer.compiled_shapes],
            'shape_pool': [a.to_dict() for a in trainer.pool]}

  phases = {'supernet': timed(store, 'supernet', train_supernet)}
  if 'params' not in trained:  # Trained by an earlier run: its last checkpoint.
    state, _, _ = trainer.fit(os.path.join(os.path.abspath(spec.workdir), 'checkpoints',
                                           'supernet'), cfg.epochs)
    trained['params'] = jax.device_get(state.params)
  params = trained['params']
  scorer = ShapeScorer(exp, params, goals)
  study = None

  def search_phase():
    nonlocal study
    study = run_search(exp, scorer, spec, goals, space)
  phases['search'] = timed(store, 'search', search_phase)
  study = study or run_search(exp, scorer, spec, goals, space)

  def finalists_phase():
    finalists = []
    for top in top_architectures(study, goals, cfg.top_k):
      arch = Architecture.from_dict(top['architecture'])
      record, models = finalize(exp, params, arch, cfg.finalize, os.path.join(
          os.path.abspath(spec.workdir), 'checkpoints', 'finalists', arch_key(arch)))
      finalists.append({**top, **record})
      if max(finalists, key=lambda f: f['validation_accuracy']) is finalists[-1]:
        save_selected(exp, arch, finalists[-1], *models, spec.workdir)
      print(f'finalist {describe(arch)}: validation {record["validation_accuracy"]:.3f}, test '
            f'{stats.interval_text(record, "test")} (n={record["n_test"]})', flush=True)
    return {'finalists': finalists}
  phases['finalists'] = timed(store, 'finalists', finalists_phase)
  finalists = phases['finalists']['finalists']
  selected = max(finalists, key=lambda f: f['validation_accuracy'])  # The first among ties.
  results = {'workflow': 'oneshot', 'sampler': spec.sampler,
             'supernet': phases['supernet'], 'search_seconds': phases['search']['seconds'],
             'finalize_seconds': phases['finalists']['seconds'],
             'finalists': finalists, 'selected': selected,
             'candidate_programs': 'one per size shape' if scorer.exact else
                                   'one per architecture',
             'run': {**search.study_results(study, 'oneshot', spec.sampler, spec.workdir, goals,
                                            exp), 'group': 'oneshot', 'repeat': 0}}
  write_outputs(spec.workdir, results)  # The search's results before the long ranking check.
  if cfg.ranking_archs:
    results['ranking'] = ranking_check(exp, scorer, store, spec.workdir)
    results['cost'] = cost_comparison(phases, results['ranking'], spec.n_trials)
    write_outputs(spec.workdir, results)
  return results


def save_selected(exp, arch: Architecture, selected: dict, compressed, float_params,
                  workdir: str):
  """The best finalist so far (its final weights and int8 form) as `best_model/oneshot`."""
  checkpoints.save_model(os.path.join(workdir, 'best_model', 'oneshot'), arch=arch,
                         model_settings=exp.model_settings(), float_params=float_params,
                         tokenizer=exp.tokenizer, data=exp.data_record(), int8=compressed.int8,
                         metrics={k: v for k, v in selected.items() if k != 'test_correct'})


def write_outputs(workdir: str, results: dict):
  search.write_json(os.path.join(workdir, 'results.json'), results)
  run = results['run']
  paths = [os.path.join(workdir, 'best_so_far.png'), os.path.join(workdir, 'pareto_front.png')]
  plots.plot_best_so_far({'oneshot': run}, paths[0], 'One-shot search over the supernet')
  points = [dict(accuracy=t['value'], model_bytes=t['model_bytes'], number=t['number'])
            for t in run['trials'] if t['state'] == 'COMPLETE']
  plots.plot_pareto(points, paths[1], 'One-shot: served int8 accuracy (inherited) vs size',
                    max_model_bytes=run['max_model_bytes'], n_validation=run['n_validation'],
                    majority=run['validation_majority_class_accuracy'])
  if 'ranking' in results:
    paths.append(os.path.join(workdir, 'ranking.png'))
    plots.plot_ranking(results['ranking'], paths[-1])
  lines = summary_lines(results)
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines) + f'\n\nfigures: {", ".join(paths)}')


def summary_lines(results: dict) -> list[str]:
  run, selected, net = results['run'], results['selected'], results['supernet']
  lines = ['# jaxnas: oneshot', '',
           f'Supernet: {net["steps"]} steps ({net["largest_only_steps"]} of the largest '
           f'sub-network alone, then sandwich steps) in {net["seconds"]:.0f} s '
           f'({net["programs_compiled"]} gradient programs, compiling {net["compile_seconds"]:.0f}'
           f' s). Search: {run["n_complete"]} sub-networks scored as served int8 models with '
           f'inherited weights on validation (n={run["n_validation"]}) in '
           f'{results["search_seconds"]:.0f} s; finalists ({selected["finalize"]}) in '
           f'{results["finalize_seconds"]:.0f} s.', '',
           '| finalist (trial) | L/H/d/ff, identity | one-shot validation | final validation '
           '| test [95% interval] | int8 bytes |', '|---|---|---|---|---|---|']
  for f in results['finalists']:
    a = f['architecture']
    mark = '**' if f == selected else ''
    lines.append(f'| {mark}{f["number"]}{mark} | {a["num_layers"]}/{a["num_heads"]}/'
                 f'{a["hidden_size"]}/{a["intermediate_size"]}, {len(a["identity"])} | '
                 f'{f["one_shot_validation_accuracy"]:.3f} | {f["validation_accuracy"]:.3f} | '
                 f'{stats.interval_text(f, "test")} (n={f["n_test"]}) | {f["model_bytes"]:,} |')
  if 'ranking' in results:
    r, c = results['ranking'], results['cost']
    low, high = r['tau_interval']
    lines += ['', f'Ranking check: Kendall tau {r["tau"]:.3f} [{low:.3f}, {high:.3f}] (95% '
              f'bootstrap, p={r["p_value"]:.3g}) between one-shot estimates and standalone '
              f'`retrain` validation accuracies of {r["n_architectures"]} architectures.',
              f'Cost: one-shot {c["one_shot_seconds"]:.0f} s for {c["one_shot_architectures_scored"]}'
              f' architectures; `retrain` {c["retrain_seconds_per_architecture"]:.0f} s per '
              f'architecture, {c["retrain_seconds_at_same_architectures"]:.0f} s for as many; in '
              f'the one-shot wall time it finishes {c["retrain_architectures_in_one_shot_seconds"]}.']
    best = c['retrain_best_in_one_shot_seconds']
    if best is not None:
      lines.append('The best of those on validation scores test '
                   f'{stats.interval_text(best, "standalone_test")}.')
  return lines
