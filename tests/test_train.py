import flax
import jax
import numpy as np
import pytest

from conftest import toy_split, train_config
from jaxnas import checkpoints, models, progress, pruning, train
from jaxnas.models import Architecture, BertClassifier

ARCH = Architecture(2, 2, 32, 64)


def fit_toy(epochs=4, masks=None, params=None):
  model = BertClassifier(ARCH, 40, 16, dropout_rate=0.0, attention_dropout_rate=0.0)
  split = toy_split(256, seed=0, length=16)
  trainer = train.Trainer(16, 64, (16,), seed=0, show_progress=False)
  if params is None:
    params = models.init_params(model, jax.random.key(0))
  num_steps = trainer.steps_per_epoch(split) * epochs
  state = train.create_train_state(model, params, train_config(), num_steps, jax.random.key(1),
                                   masks=masks)
  state, losses, _ = trainer.fit(state, split, epochs)
  metrics = trainer.evaluate(model.apply, {'params': state.params},
                             toy_split(128, seed=1, length=16))
  return state, losses, metrics['accuracy']


def test_training_learns_a_learnable_task():
  state, losses, accuracy = fit_toy()
  assert int(state.step) == 4 * 16
  assert losses[-1] < 0.5 * losses[0]
  assert accuracy > 0.9


def test_off_a_terminal_the_last_step_is_one_line_with_the_loss(monkeypatch, capsys):
  monkeypatch.setattr(progress, 'PLAIN_INTERVAL_SECONDS', 0)  # A line at every step.
  model = BertClassifier(ARCH, 40, 16, dropout_rate=0.0, attention_dropout_rate=0.0)
  split = toy_split(64, seed=0, length=16)
  trainer = train.Trainer(16, 64, (16,), seed=0)  # Shows progress, here as plain lines.
  state = train.create_train_state(model, models.init_params(model, jax.random.key(0)),
                                   train_config(), 4, jax.random.key(1))
  trainer.fit(state, split, 1)
  (last,) = [line for line in capsys.readouterr().err.splitlines() if '4/4' in line]
  assert 'loss=' in last


def test_masked_weights_stay_exactly_zero_during_training():
  state, _, _ = fit_toy(epochs=1)
  masks = pruning.magnitude_masks(state.params, 0.5)
  retrained, _, _ = fit_toy(epochs=1, masks=masks, params=state.params)
  sparsity = pruning.measured_sparsity(retrained.params)
  assert all(value == 0.5 for value in sparsity['per_tensor'].values())
  flat = flax.traverse_util.flatten_dict(retrained.params, sep='/')
  for path, mask in masks.items():
    weights = np.asarray(flat[path])
    assert np.all(weights[mask == 0] == 0) and np.all(weights[mask == 1] != 0)


def test_latency_is_a_median_of_many_batches_and_two_runs_agree_within_its_spread():
  """A split of two batches is timed again, past its warm-up batch, for LATENCY_SECONDS;
  two evaluations' medians differ by less than their interquartile ranges together."""
  model = BertClassifier(ARCH, 40, 16, dropout_rate=0.0, attention_dropout_rate=0.0)
  variables = {'params': models.init_params(model, jax.random.key(0))}
  trainer = train.Trainer(16, 64, (16,), seed=0, show_progress=False)
  split = toy_split(128, seed=1, length=16)
  first, second = (trainer.evaluate(model.apply, variables, split, time_batches=True)['latency']
                   for _ in range(2))
  for latency in (first, second):
    assert latency['batches'] >= train.LATENCY_BATCHES and latency['batch_size'] == 64
    low, high = latency['ms_per_example_iqr']
    assert 0 < low <= latency['ms_per_example'] <= high
  spread = sum(high - low for low, high in (first['ms_per_example_iqr'],
                                             second['ms_per_example_iqr']))
  assert abs(first['ms_per_example'] - second['ms_per_example']) <= spread, (first, second)
  # The first batch of each shape may compile: it is left out, batch lengths 16 and 32 alike.
  timed = [((64, 16), 9.0)] + [((64, 16), 0.064)] * 20 + [((64, 32), 9.0)] + [
      ((64, 32), 0.128)] * 20
  latency = trainer.latency(None, None, split, [], timed)
  assert latency['batches'] == 40 and latency['ms_per_example_iqr'] == pytest.approx([1, 2])


def _toy_run(tmp_path, stop_after=None):
  """Fits the toy task for 2 epochs with checkpoints every 5 steps; optionally stops early."""
  model = BertClassifier(ARCH, 40, 16)
  split = toy_split(128, seed=0, length=16)
  polls = []  # Training polls once after every step.
  trainer = train.Trainer(16, 64, (16,), seed=0, show_progress=False,
                          stop_requested=lambda: polls.append(1) or len(polls) == stop_after)
  state = train.create_train_state(model, models.init_params(model, jax.random.key(0)),
                                   train_config(), trainer.steps_per_epoch(split) * 2,
                                   jax.random.key(1))
  return trainer.fit(state, split, 2, checkpoints=checkpoints.TrainingCheckpoints(
      str(tmp_path / 'ckpt'), every_steps=5))


def test_interrupted_training_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
  uninterrupted, _, _ = _toy_run(tmp_path / 'a')
  with pytest.raises(KeyboardInterrupt):
    _toy_run(tmp_path / 'b', stop_after=7)  # Saves step 7 on the way out.
  resumed, _, start = _toy_run(tmp_path / 'b')
  assert start == 7 and int(resumed.step) == int(uninterrupted.step) == 16
  for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                  jax.tree_util.tree_leaves(uninterrupted.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    _toy_run(tmp_path, stop_after=7)  # Checkpoints at steps 5 and 7.
  for path in (tmp_path / 'ckpt' / '7').rglob('*'):
    if path.is_file():
      path.write_bytes(b'garbage')
  _, _, start = _toy_run(tmp_path)
  assert start == 5
