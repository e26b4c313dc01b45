"""The one-shot workflow: sandwich sampling, the ranking statistics, and a whole run on the test
config that is killed with SIGKILL during supernet training and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import elastic, oneshot, supernet
from jaxnas.models import square_dense_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = {'num_layers': (2, 4), 'num_heads': (2, 4, 8), 'hidden_size': (128, 192, 256),
         'intermediate_size': (512, 768, 1024)}


def test_sandwich_is_largest_smallest_and_random_members_of_the_pool():
  pool = supernet.shape_pool(SPACE, 8, seed=0)
  assert len(set(pool)) == 8
  for name in SPACE:  # Every option of every size is trained.
    assert {getattr(a, name) for a in pool} == set(SPACE[name])
  for step in range(20):
    archs = supernet.sandwich(SPACE, pool, 2, seed=0, step=step)
    assert archs == supernet.sandwich(SPACE, pool, 2, seed=0, step=step)  # Resumable.
    largest, smallest, *randoms = archs
    assert (largest.num_layers, largest.hidden_size, largest.identity) == (4, 256, ())
    assert (smallest.num_layers, smallest.num_heads, smallest.hidden_size,
            smallest.intermediate_size) == (2, 2, 128, 512)
    assert smallest.identity == tuple(sorted(square_dense_names(2, 128, 512)))
    assert len(randoms) == 2 and all(elastic.size_shape(a) in pool for a in randoms)
  identity = [len(a.identity) for step in range(20)
              for a in supernet.sandwich(SPACE, pool, 2, 0, step)[2:]]
  assert len(set(identity)) > 3  # Identity choices drawn per step.


def test_the_first_steps_train_the_largest_alone(monkeypatch):
  trainer = object.__new__(supernet.SupernetTrainer)  # Its step without a model behind it.
  trainer.space, trainer.pool, trainer.num_random = SPACE, supernet.shape_pool(SPACE, 8, 0), 2
  trainer.exp = types.SimpleNamespace(config=types.SimpleNamespace(seed=0), num_classes=2)
  trainer.largest_only, trainer.num_steps, trainer.distill = 0.5, 10, True
  trainer.prune_start, trainer.prune_end, trainer.target_sparsity = 0.25, 0.75, 0.5
  trainer._update = lambda state, grads: state
  trained = []

  def grad_fn(shape):
    trained.append(shape)
    return lambda params, grads, *args: (grads, 0.0, jnp.zeros((2, 2)))
  monkeypatch.setattr(trainer, '_grad_fn', grad_fn)
  counts = []
  for step in range(10):
    trained.clear()
    trainer.step(types.SimpleNamespace(step=step, params={'w': jnp.zeros(1)},
                                       dropout_rng=jax.random.key(0)),
                 {'labels': jnp.zeros(2, jnp.int32)})
    counts.append(len(trained))
    assert trained[0] == elastic.supernet_architecture(SPACE)
  assert counts == [1] * 5 + [4] * 5


def test_spread_architectures_take_every_option_in_equal_shares():
  archs = oneshot.spread_architectures(SPACE, 12, seed=0)
  assert len(set(archs)) == 12
  for name, options in SPACE.items():
    counts = [sum(getattr(a, name) == o for a in archs) for o in options]
    assert counts == [12 // len(options)] * len(options)


def test_kendall_tau_and_its_bootstrap_interval():
  rng = np.random.default_rng(0)
  x = rng.random(12)
  same = oneshot.kendall_tau(x, 2 * x + 1, seed=0)
  np.testing.assert_allclose([same['tau'], *same['tau_interval']], 1.0)
  np.testing.assert_allclose(oneshot.kendall_tau(x, -x, seed=0)['tau'], -1.0)
  noisy = oneshot.kendall_tau(x, x + rng.normal(0, 0.3, 12), seed=0)
  low, high = noisy['tau_interval']
  assert -1 <= low < noisy['tau'] < high <= 1


def _command(workdir):
  return [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
          '--workflow=oneshot', '--n_trials=4', f'--workdir={workdir}',
          '--config.search.space.num_layers=(1,2)', '--config.search.space.num_heads=(2,4)',
          '--config.search.space.hidden_size=(64,128)',
          '--config.search.space.intermediate_size=(128,256)',
          '--config.oneshot.epochs=3', '--config.oneshot.finetune_epochs=1',
          '--config.oneshot.ranking_archs=2', '--config.oneshot.top_k=1',
          f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla']


def test_oneshot_run_resumes_after_sigkill(tmp_path):
  checkpoints = tmp_path / 'checkpoints' / 'supernet'
  first = subprocess.Popen(_command(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not any(p.name.isdigit() and int(p.name) >= 8 for p in checkpoints.glob('*')):
    assert first.poll() is None and time.time() < deadline, 'no supernet checkpoint'
    time.sleep(0.5)
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert not (tmp_path / 'results.json').exists()
  second = subprocess.run(_command(tmp_path), cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
  assert second.returncode == 0, second.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  net = results['supernet']
  assert net['resumed_from_step'] >= 8 and net['steps'] == 45  # 3 epochs of 15 steps.
  assert net['losses'][-1] < net['losses'][0]
  assert 2 <= net['programs_compiled'] <= 4  # Largest, smallest and the pool's 2 shapes.
  assert results['run']['n_complete'] == 4
  assert results['candidate_programs'] == 'one per size shape'
  assert net['largest_only_steps'] == 23  # Half of the 45, then sandwich steps.
  selected = results['selected']
  # 45 steps teach the largest sub-networks the easy reviews, not those the search picks
  # (mostly Identity), so the accuracy itself is not asserted.
  assert selected['n_test'] == 100 and len(results['finalists']) == 1
  low, high = selected['test_accuracy_interval']
  assert low <= selected['test_accuracy'] <= high
  assert len(results['ranking']['architectures']) == 2 and 'tau' in results['ranking']
  assert results['cost']['retrain_seconds_per_architecture'] > 0
  for name in ('best_so_far.png', 'pareto_front.png', 'ranking.png', 'summary.md'):
    assert (tmp_path / name).exists()
  assert (tmp_path / 'best_model' / 'oneshot' / 'model.json').exists()


def test_rerank_trains_the_ranking_architectures_under_the_given_recipe_and_resumes(
    tmp_path, test_config, monkeypatch):
  from jaxnas import rerank, workflows  # pylint: disable=g-import-not-at-top
  from jaxnas.models import Architecture  # pylint: disable=g-import-not-at-top
  archs = [Architecture(2, 2, 128, 512), Architecture(2, 4, 128, 768, ('pooler',)),
           Architecture(4, 2, 128, 512)]
  rows = [{'architecture': a.to_dict(), 'one_shot_validation_accuracy': one_shot,
           'standalone_validation_accuracy': run}
          for a, one_shot, run in zip(archs, (0.6, 0.7, 0.8), (0.9, 0.8, 0.5))]
  (tmp_path / 'config.json').write_text(test_config.to_json())
  (tmp_path / 'results.json').write_text(json.dumps({'ranking': {'architectures': rows}}))
  trained = []

  def run_trial(exp, arch, workflow):  # The recipe's learning rate decides the score.
    trained.append((arch, workflow, exp.config.train.warmup_steps))
    value = 0.5 + exp.config.train.learning_rate * 100 * (arch.num_heads + arch.num_layers)
    return value, {'trial_seconds': 1.0, 'float_validation_accuracy': value}, None, None

  monkeypatch.setattr(workflows, 'run_trial', run_trial)
  result = rerank.rerank(str(tmp_path), 1e-4, 7)
  assert trained == [(a, 'retrain', 7) for a in archs]
  assert [result['trials'][oneshot.arch_key(a)]['validation_accuracy'] for a in archs] == (
      pytest.approx([0.54, 0.56, 0.56]))
  assert result['one_shot_vs_recipe']['tau'] == pytest.approx(0.8165, abs=1e-4)  # Tau-b, a tie.
  assert result['run_standalone_vs_recipe']['tau'] == pytest.approx(-0.8165, abs=1e-4)
  rerank.rerank(str(tmp_path), 1e-4, 7)  # Kept: nothing trained again.
  assert len(trained) == 3
