"""Two processes on localhost with jax.distributed (CPU) run one baseline trial together, then
compress and retrain the best model together."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_run_one_trial_and_only_process_0_writes(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  processes = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'launch.py'), '--config=configs/test.py',
       '--workflow=baseline', '--n_trials=1', f'--workdir={tmp_path}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
       f'--config.compilation_cache_dir={ROOT}/.pytest_cache/xla'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [process.communicate(timeout=600) for process in processes]
  for process, (_, stderr) in zip(processes, outputs):
    # Both exit cleanly, so the processes agreed on the trial's objective (assert_same).
    assert process.returncode == 0, stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  (trial,) = results['trials']
  assert trial['state'] == 'COMPLETE' and trial['num_processes'] == 2
  post = results['post_compression']  # Both processes loaded the best model and trained it.
  assert post['trial'] == 0 and post['retrained_int8_test_accuracy'] > 0.9  # Learned.
  assert 'figures:' in outputs[0][0] and 'figures:' not in outputs[1][0]
  assert 'trial 0: validation' in outputs[0][0] and 'trial 0' not in outputs[1][0]
  assert (tmp_path / 'best_model' / 'jaxnas' / 'float').is_dir()
