"""Multi-process runs: a multi-host TPU slice, or several GPU hosts.

One Optuna trial spans all processes. Process 0 alone talks to the study and writes results
and figures; it broadcasts each trial's parameters, every process trains the trial on its
shard of each batch, and Orbax checkpoints are saved and restored by all processes together.
With one process every function here is a no-op or the identity.
"""

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1):
  """Joins the run's processes: with the flags given, or detected on a multi-host TPU VM."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):  # Set on every host of a TPU slice.
    jax.distributed.initialize()


def is_leader() -> bool:
  return jax.process_index() == 0


def broadcast_json(payload):
  """Process 0's `payload` (anything JSON can hold), on every process."""
  if jax.process_count() == 1:
    return payload
  data = np.frombuffer(json.dumps(payload).encode(), np.uint8) if is_leader() else None
  size = int(multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else data.size)))
  buffer = data if data is not None else np.zeros(size, np.uint8)
  return json.loads(bytes(multihost_utils.broadcast_one_to_all(buffer)).decode())


def agreed(stop_requested):
  """`stop_requested` that turns true on every process at the same step, once any process
  was asked to stop: processes that stopped at different steps would wait for each other."""
  if jax.process_count() == 1:
    return stop_requested
  return lambda: bool(np.any(multihost_utils.process_allgather(np.bool_(stop_requested()))))


def assert_same(value: float, what: str):
  """Raises unless every process computed the same `value` (a check that they stayed in step)."""
  if jax.process_count() > 1:
    values = multihost_utils.process_allgather(np.float64(value))
    if not np.all(values == values[0]):
      raise RuntimeError(f'processes disagree on {what}: {values.tolist()}')


def barrier(name: str):
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
