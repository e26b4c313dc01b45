"""Data parallelism over host-platform CPU devices (each run in its own process)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = """
import json, jax
from conftest import toy_split, train_config
from jaxnas import models, train
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier

model = BertClassifier(Architecture(2, 2, 32, 64), 40, 16)
split = toy_split(128, seed=0, length=16)
trainer = train.Trainer(16, 32, (16,), seed=0, show_progress=False)
steps = trainer.steps_per_epoch(split) * 3
state = train.create_train_state(model, models.init_params(model, jax.random.key(0)),
                                 train_config(), steps, jax.random.key(1))
batch = trainer.put_batch({'input_ids': jax.numpy.zeros((16, 16), 'int32')})
state, losses, _ = trainer.fit(state, split, 3)
try:
  train.Trainer(6, 32, (16,), seed=0)
  uneven = None
except UserError as e:
  uneven = str(e)
print(json.dumps({
    'devices': jax.device_count(), 'losses': losses, 'uneven': uneven,
    'batch_sharding': list(batch['input_ids'].sharding.spec),
    'batch_shards': len(batch['input_ids'].addressable_shards),
    'param_replicated': state.params['classifier']['dense']['kernel'].sharding.is_fully_replicated,
}))
"""


def run_on(num_devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             PYTHONPATH=os.pathsep.join([TESTS, os.path.dirname(TESTS)]))
  out = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize('num_devices', [4])
def test_data_parallel_training_matches_one_device(num_devices):
  one, many = run_on(1), run_on(num_devices)
  assert (one['devices'], many['devices']) == (1, num_devices)
  assert many['batch_shards'] == num_devices and many['batch_sharding'] == ['data']
  assert many['param_replicated']
  # Same math, different reduction order across devices: equal to float32 rounding.
  np.testing.assert_allclose(many['losses'], one['losses'], rtol=1e-4)
  assert 'does not divide evenly over 4 devices' in many['uneven']
