"""What a study optimizes: the accuracy of the workflow, optionally with the size or latency
of the compressed model (a multi-objective study), under an optional size limit.

  accuracy  maximize the workflow's objective (float accuracy for `baseline`, the served int8
            accuracy otherwise);
  size      minimize the stored int8 model's bytes;
  latency   minimize the served int8 model's measured latency per example on this device.

`max_model_bytes` is an Optuna constraint (a trial is feasible when its int8 model is at most
that size): samplers that support constraints (TPE, NSGA-II) steer towards feasible trials,
and the best trial and the Pareto front are chosen among feasible trials only.
"""

import dataclasses
import math

import optuna

from jaxnas.errors import UserError

DIRECTIONS = {'accuracy': 'maximize', 'size': 'minimize', 'latency': 'minimize'}
RECORD_KEYS = {'size': 'model_bytes', 'latency': 'latency_ms_per_example'}


@dataclasses.dataclass(frozen=True)
class Objectives:
  names: tuple[str, ...]
  max_model_bytes: int = 0  # 0: no limit.

  @classmethod
  def parse(cls, text: str, max_model_bytes: int = 0) -> 'Objectives':
    names = tuple(name.strip() for name in text.split(',') if name.strip())
    unknown = [name for name in names if name not in DIRECTIONS]
    if unknown or not names or names[0] != 'accuracy' or len(set(names)) != len(names):
      raise UserError(f'--objectives={text!r}: use accuracy, optionally followed by size '
                      'and/or latency (e.g. accuracy,size)')
    if max_model_bytes < 0:
      raise UserError(f'--max_model_bytes must be positive, got {max_model_bytes}')
    return cls(names, max_model_bytes)

  @property
  def multi(self) -> bool:
    return len(self.names) > 1

  @property
  def directions(self) -> list[str]:
    return [DIRECTIONS[name] for name in self.names]

  def values(self, accuracy: float, record: dict) -> list[float]:
    return [accuracy] + [record[RECORD_KEYS[name]] for name in self.names[1:]]

  def constraints(self, record: dict) -> float:
    """Optuna's constraint value of a trial's record: feasible when <= 0."""
    return record.get('model_bytes', math.inf) - self.max_model_bytes

  def feasible(self, trial: optuna.trial.FrozenTrial) -> bool:
    return not self.max_model_bytes or self.constraints(trial.user_attrs) <= 0

  def pareto_front(self, trials: list) -> list:
    """The feasible trials that no other feasible trial dominates, by trial number."""
    feasible = [t for t in trials if self.feasible(t)]
    signs = [1 if d == 'maximize' else -1 for d in self.directions]
    front = non_dominated([[s * v for s, v in zip(signs, t.values)] for t in feasible])
    return sorted((feasible[i] for i in front), key=lambda t: t.number)


def non_dominated(scores: list) -> list[int]:
  """The indices of the score vectors (higher is better in each entry) that no other vector
  dominates: is at least as good in every entry and better in one."""
  dominates = lambda a, b: all(x >= y for x, y in zip(a, b)) and tuple(a) != tuple(b)
  return [i for i, s in enumerate(scores) if not any(dominates(o, s) for o in scores)]
