"""How much each trained architecture loses to each compression setting, without retraining.

`--workflow=sensitivity` trains a baseline study's architectures once, then scores each saved
float model on the validation split under every setting of `config.sensitivity.settings`: a
served model per setting, no training in between, so a sweep over numerics and sparsities costs
evaluations only. It shows where compression starts to separate architectures (some keep their
accuracy, others fall to chance), which is where compression-aware search has something to
find. Nothing here selects a model; the validation split keeps the test split untouched for
the searches that a sweep informs.

A setting is a name: numerics, then `+`-joined pruning, e.g. 'Q4.4+w50+a50'.
  float        the float model
  int8         jaxnas's int8 (the config's int8 engine: per-channel and per-token scales)
  Q{i}.{f}     the lab's fixed point with i integer and f fractional bits (width i + f <= 8)
               on every Dense's input, weight and bias; 'Q4.4w': weights and biases only
  w{p}         p% of each kernel's weights pruned by magnitude (per tensor)
  a{p}         p% of each Dense input's activations pruned, one threshold per tensor (the
               lab's); 'a{p}token': one per token vector (jaxnas's)
"""

import dataclasses
import json
import os
import re

from jaxnas import checkpoints, quantization, search, stats, summary, workflows
from jaxnas.errors import UserError

SETTING_FILE = 'sensitivity.json'
_NUMERICS = re.compile(r'^(float|int8|Q(\d)\.(\d)(w?))$')
_PRUNING = re.compile(r'^(w|a)(\d{1,2})(token)?$')


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  quant_engine: str  # '' for float.
  fixed_point: dict
  weight_sparsity: float = 0.0
  activation_sparsity: float = 0.0
  activation_prune_scope: str = 'tensor'


def parse_setting(name: str, config_engine: str = 'aqt') -> Setting:
  """The setting called `name`; 'int8' is `config_engine` if that is an int8 engine (AQT or
  Qwix), else AQT."""
  int8_engine = config_engine if config_engine in quantization.INT8_ENGINES else 'aqt'
  numerics, *pruning = name.split('+')
  match = _NUMERICS.match(numerics)
  if not match:
    raise UserError(f'sensitivity setting {name!r}: numerics must be float, int8 or Q<i>.<f> '
                    '(e.g. Q4.4), optionally followed by +w<percent> and +a<percent>')
  engine, fixed_point = {'float': '', 'int8': int8_engine}.get(numerics, 'fixed'), {}
  if engine == 'fixed':
    integer_bits, frac_bits, weights_only = int(match[2]), int(match[3]), bool(match[4])
    fixed_point = dict(width=integer_bits + frac_bits, frac_width=frac_bits,
                       inputs=not weights_only, weights=True, biases=True)
  options = {}
  for part in pruning:
    prune = _PRUNING.match(part)
    if not prune or (prune[1] == 'w' and prune[3]):
      raise UserError(f'sensitivity setting {name!r}: unknown pruning {part!r} (w50, a50 or '
                      'a50token)')
    if prune[1] == 'w':
      options['weight_sparsity'] = int(prune[2]) / 100
    else:
      options['activation_sparsity'] = int(prune[2]) / 100
      options['activation_prune_scope'] = 'token' if prune[3] else 'tensor'
  if engine == 'fixed':
    quantization.get_engine('fixed', fixed_point)  # Rejects widths over 8 here.
  return Setting(name, engine, fixed_point, **options)


def setting_experiment(exp: workflows.Experiment, setting: Setting) -> workflows.Experiment:
  """`exp` whose compression is `setting` (its engine built once per setting)."""
  config = exp.config.copy_and_resolve_references()
  cfg = config.compression
  cfg.quant_engine = setting.quant_engine or cfg.quant_engine
  cfg.fixed_point.update(setting.fixed_point)
  cfg.weight_sparsity = setting.weight_sparsity
  cfg.activation_sparsity = setting.activation_sparsity
  cfg.activation_prune_scope = setting.activation_prune_scope
  return dataclasses.replace(exp, config=config, engine=quantization.get_engine(
      cfg.quant_engine, cfg.fixed_point, cfg.int8_dot))


def score_setting(exp: workflows.Experiment, trained: workflows.TrainedModel,
                  setting: Setting) -> float:
  """Validation accuracy of `trained` compressed with `setting` and served."""
  if not setting.quant_engine:
    return workflows.score_float(exp, trained, exp.validation_split)['accuracy']
  return workflows.compress(setting_experiment(exp, setting), trained).accuracy


def score_trials(exp: workflows.Experiment, trials: list[dict], workdir: str) -> dict:
  """Scores every completed trial's saved model under every setting; resumes from the
  workdir's sensitivity.json (a pair already scored is not scored again)."""
  settings = [parse_setting(name, exp.config.compression.quant_engine)
              for name in exp.config.sensitivity.settings]
  path = os.path.join(workdir, SETTING_FILE)
  scores = _read(path)
  for trial in trials:
    key = str(trial['number'])
    entry = scores.setdefault(key, {'architecture': trial['architecture'], 'accuracy': {}})
    missing = [s for s in settings if s.name not in entry['accuracy']]
    if not missing:
      continue
    saved = checkpoints.load_model(trial['model_dir'])
    trained = workflows.TrainedModel(exp.build_model(saved['architecture']),
                                     saved['float_params'])
    for setting in missing:
      print(f'trial {key}: {setting.name}', flush=True)
      entry['accuracy'][setting.name] = score_setting(exp, trained, setting)
      search.write_json(path, scores)
  n = len(exp.validation_split)
  return {'settings': [s.name for s in settings], 'n_validation': n,
          'majority_class_accuracy':
              stats.majority_class_accuracy(exp.validation_split.labels),
          'trials': {key: scores[key] for key in (str(t['number']) for t in trials)}}


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}
  except ValueError as e:
    raise UserError(f'{path} is damaged ({e}); delete it to score again') from None


def summary_lines(sensitivity: dict) -> list[str]:
  """A markdown table: one row per architecture, one column per setting."""
  settings, n = sensitivity['settings'], sensitivity['n_validation']
  lines = ['', f'Validation accuracy (n={n}) of each trained architecture under each '
           'compression setting, served, without retraining (majority class: '
           f'{sensitivity["majority_class_accuracy"]:.3f}; a 95% interval is about '
           f'+-{_half_width(n):.3f} near 0.75).', '',
           '| trial | L/H/d/ff, identity | ' + ' | '.join(settings) + ' |',
           '|---|---|' + '---|' * len(settings)]
  for key, entry in sensitivity['trials'].items():
    lines.append(f'| {key} | {summary.shape_text(entry["architecture"])} | ' + ' | '.join(
        f'{entry["accuracy"][s]:.3f}' for s in settings) + ' |')
  return lines


def _half_width(n: int) -> float:
  low, high = stats.wilson_interval(round(0.75 * n), n)
  return (high - low) / 2
