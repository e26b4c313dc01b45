"""Checks a whole config before any work, so that a bad value is one clear error line
instead of a traceback (or a silently odd run) minutes later."""

import math

from jaxnas import fixed_point, quantization, sensitivity
from jaxnas.errors import UserError
from jaxnas.models import ACTIVATION_PRUNE_SCOPES

_POSITIVE = ('must be > 0', lambda v: v > 0)
_NON_NEGATIVE = ('must be >= 0', lambda v: v >= 0)
_AT_LEAST_ONE = ('must be >= 1', lambda v: v >= 1)
_FRACTION = ('must be in [0, 1)', lambda v: 0 <= v < 1)
_OPEN_FRACTION = ('must be in (0, 1)', lambda v: 0 < v < 1)
_CLOSED_FRACTION = ('must be in [0, 1]', lambda v: 0 <= v <= 1)


def _one_of(*options):
  return f'must be one of {", ".join(map(repr, options))}', lambda v: v in options


RULES = {
    'data.source': _one_of('embedded', 'imdb', 'local'),
    'data.test_fraction': _OPEN_FRACTION,
    'data.validation_size': ('must be a count (>= 1) or a fraction in (0, 1)', lambda v: v > 0),
    'data.train_size': _NON_NEGATIVE,
    'data.test_size': _NON_NEGATIVE,
    'data.num_buckets': _AT_LEAST_ONE,
    'tokenizer.vocab_size': ('must be >= 100', lambda v: v >= 100),
    'tokenizer.max_length': ('must be >= 8', lambda v: v >= 8),
    'tokenizer.truncation_side': _one_of('right', 'left'),
    'model.dropout_rate': _FRACTION,
    'model.attention_dropout_rate': _FRACTION,
    'model.dtype': _one_of('float32', 'bfloat16'),
    'train.batch_size': _AT_LEAST_ONE,
    'train.eval_batch_size': _AT_LEAST_ONE,
    'train.learning_rate': _POSITIVE,
    'train.warmup_steps': _NON_NEGATIVE,
    'train.weight_decay': _NON_NEGATIVE,
    'train.grad_clip': _POSITIVE,
    'train.epochs': _POSITIVE,
    'train.checkpoint_every_steps': _AT_LEAST_ONE,
    'compression.quant_engine': _one_of(*quantization.ENGINES),
    'compression.int8_dot': _one_of(*quantization.INT8_DOT_SETTINGS),
    'compression.weight_sparsity': _FRACTION,
    'compression.prune_scope': _one_of('local', 'global'),
    'compression.activation_sparsity': _FRACTION,
    'compression.activation_prune_scope': _one_of(*ACTIVATION_PRUNE_SCOPES),
    'compression.retrain_epochs': _POSITIVE,
    'compression.retrain_learning_rate': _POSITIVE,
    'oneshot.epochs': _POSITIVE,
    'oneshot.num_random': _NON_NEGATIVE,
    'oneshot.train_shapes': _AT_LEAST_ONE,
    'oneshot.learning_rate': _POSITIVE,
    'oneshot.warmup_steps': _NON_NEGATIVE,
    'oneshot.distillation': _one_of('inplace', 'none'),
    'oneshot.largest_only': _CLOSED_FRACTION,
    'oneshot.prune_start': _CLOSED_FRACTION,
    'oneshot.prune_end': _CLOSED_FRACTION,
    'oneshot.top_k': _AT_LEAST_ONE,
    'oneshot.finalize': _one_of('finetune', 'scratch'),
    'oneshot.finetune_epochs': _POSITIVE,
    'oneshot.ranking_archs': _NON_NEGATIVE,
    'search.n_trials': _AT_LEAST_ONE,
    'search.report_every_steps': _NON_NEGATIVE,
    'search.heartbeat_seconds': _POSITIVE,
    'search.grace_seconds': _POSITIVE,
}


def validate_config(config):
  """Raises a UserError naming the first field of `config` with a value out of range."""
  for path, (requirement, holds) in RULES.items():
    section, name = path.split('.')
    value = config[section][name]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (numeric and not math.isfinite(value)) or not holds(value):
      raise UserError(f'config.{path}={value!r} {requirement}')
  try:
    fixed_point.FixedPoint(**config.compression.fixed_point)
  except UserError as e:
    raise UserError(f'config.compression.fixed_point: {e}') from None
  for setting in config.sensitivity.settings:
    sensitivity.parse_setting(setting)
