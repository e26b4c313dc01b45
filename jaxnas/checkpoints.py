"""Saved models: float parameters, the stored int8 form, architecture and tokenizer.

Layout of a model directory:
  model.json      architecture, model settings, data (the data config, i.e. which splits it
                  was trained and scored on, and the class names) and the metrics measured;
  tokenizer.json  the tokenizer the model was trained with;
  float/          Orbax checkpoint of the float parameters;
  int8/           Orbax checkpoint of the stored int8 form (compression workflows only).
A directory is written under a temporary name and renamed, so it is complete or absent.

Every save is synchronous: Orbax's asynchronous saves are not safe from several threads at
once (trials run side by side: one thread's save timed out after 300 s, another failed with
FileExistsError in its own directory), and a model here is a few megabytes.
"""

import json
import os
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxnas import distributed
from jaxnas.errors import UserError
from jaxnas.models import Architecture

MODEL_FILE = 'model.json'
TOKENIZER_FILE = 'tokenizer.json'


def save_model(directory: str, *, arch: Architecture, model_settings: dict, float_params,
               tokenizer, data: dict, int8=None, metrics=None):
  """Called by every process of a multi-process run (Orbax writes arrays collectively)."""
  directory = os.path.abspath(directory)
  tmp = f'{directory}.tmp'
  if distributed.is_leader():
    shutil.rmtree(tmp, ignore_errors=True)
  distributed.barrier('save_model:start')
  with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
    checkpointer.save(os.path.join(tmp, 'float'), args=ocp.args.StandardSave(float_params))
    if int8 is not None:
      checkpointer.save(os.path.join(tmp, 'int8'), args=ocp.args.StandardSave(int8))
  distributed.barrier('save_model:saved')
  if distributed.is_leader():
    with open(os.path.join(tmp, MODEL_FILE), 'w') as f:
      json.dump({'architecture': arch.to_dict(), 'model': model_settings, 'data': data,
                 'metrics': metrics or {}}, f, indent=2)
    tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
    _replace_dir(tmp, directory)


def export_model(model_dir: str, export_dir: str):
  """Copies a saved model directory to `export_dir`, replacing what was there."""
  export_dir = os.path.abspath(export_dir)
  tmp = f'{export_dir}.tmp{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(model_dir, tmp)
  _replace_dir(tmp, export_dir)


def _replace_dir(tmp: str, directory: str):
  """Moves a completely written `tmp` into place; `directory` is never half-written."""
  old = f'{directory}.old{os.getpid()}'
  if os.path.exists(directory):
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)


def load_model(directory: str) -> dict:
  """{'architecture', 'model', 'data', 'metrics', 'float_params', 'int8' (or None),
  'tokenizer_path'}."""
  directory = os.path.abspath(directory)  # Orbax takes absolute paths only.
  model_file = os.path.join(directory, MODEL_FILE)
  if not os.path.isfile(model_file):
    raise UserError(f'no saved model at {directory} (missing {MODEL_FILE})')
  try:
    with open(model_file) as f:
      saved = json.load(f)
    saved['architecture'] = Architecture.from_dict(saved['architecture'])
    with ocp.StandardCheckpointer() as checkpointer:
      saved['float_params'] = checkpointer.restore(os.path.join(directory, 'float'))
      int8_path = os.path.join(directory, 'int8')
      saved['int8'] = checkpointer.restore(int8_path) if os.path.exists(int8_path) else None
  except UserError:
    raise
  except Exception as e:  # JSON, Orbax and tensorstore errors all mean a damaged export.
    raise UserError(f'saved model at {directory} is unreadable: {type(e).__name__}: {e}') from e
  saved['tokenizer_path'] = os.path.join(directory, TOKENIZER_FILE)
  return saved


class TrainingCheckpoints:
  """Orbax checkpoints of one training phase, for resuming it mid-way.

  Saved every `every_steps` steps and at the phase end (Orbax writes each one under a temporary
  name and renames it, so a checkpoint is complete or absent). The data order and dropout keys
  are functions of the step, so step, parameters, optimizer state, masks and the dropout key
  are all a resumed phase needs. The two newest checkpoints are kept: an unreadable newest one
  falls back to the one before, with a warning.
  """

  FIELDS = ('step', 'params', 'opt_state', 'masks', 'dropout_rng')

  def __init__(self, directory: str, every_steps: int):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=every_steps,
                                             enable_async_checkpointing=False))

  def save(self, state, force: bool = False):
    step = int(state.step)
    if step not in self._manager.all_steps():
      fields = {name: getattr(state, name) for name in self.FIELDS}
      self._manager.save(step, args=ocp.args.StandardSave(fields), force=force)

  def restore_latest(self, state):
    """`state` advanced to the newest readable checkpoint (unchanged when there is none)."""
    abstract = {name: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, getattr(state, name))
                for name in self.FIELDS}
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # Damaged files surface as many error types.
        logging.warning('checkpoint at step %d is unreadable (%s: %s); trying an older one',
                        step, type(e).__name__, e)
        continue
      return state.replace(**restored)
    return state

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
