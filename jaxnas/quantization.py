"""Quantization behind a narrow engine interface: int8 with AQT (`aqt.jax.v2`) or Qwix
(`qwix`), or the lab's fixed-point numerics (`FixedPointEngine`, see fixed_point.py).

An engine does three things to a `BertClassifier`:
  * `training_model(model)`: the quantization-aware model (int8 forward, straight-through
    gradients) used whenever a compressed model is trained;
  * `convert(model, params)`: the stored int8 form, a plain dict of arrays that checkpoints as
    is: {'int8': {path: {'qvalue': int8, 'scale': float32}}, 'float': {path: array}};
  * `serving_apply(model)`: `apply(stored, input_ids) -> logits` that runs from the stored form.

With either int8 engine, every Dense runs an int8 x int8 dot_general with per-output-channel
weight scales and dynamic per-token activation scales. Embedding tables are stored as int8 with
one scale per row and dequantized on lookup (the QAT model sees the same rounding), so the whole
checkpoint is about 4x smaller than the float one; biases and LayerNorm parameters stay float32.
"""

import functools

import flax
import jax
import jax.numpy as jnp
from aqt.jax.v2 import aqt_tensor
from aqt.jax.v2 import config as aqt_config
from aqt.jax.v2.flax import aqt_flax
from aqt.jax.v2.utils import QuantMode
import qwix

from jaxnas import fixed_point, machine
from jaxnas.errors import UserError

INT8_MAX = 127
# Longest contraction whose int8 x int8 partial sums are all exact in float32 (at most 2^24).
EXACT_FLOAT32_CONTRACTION = 2 ** 24 // 128 ** 2
FROZEN_WEIGHTS = '/AqtDotGeneral_0/qrhs/frozen'  # Where AQT's CONVERT mode stores a kernel.


def quantize_rows(table):
  """Symmetric int8 quantization with one absmax scale per row: (qvalue, scale[rows, 1])."""
  scale = jnp.max(jnp.abs(table), axis=-1, keepdims=True) / INT8_MAX
  scale = jnp.where(scale == 0, 1.0, scale)
  return jnp.round(table / scale).astype(jnp.int8), scale


def fake_quantize_rows(table):
  """int8 round trip with a straight-through gradient."""
  qvalue, scale = quantize_rows(table)
  return table + jax.lax.stop_gradient(qvalue.astype(table.dtype) * scale - table)


def int8_dot_in_float32(lhs, rhs, dimension_numbers, precision=None,
                        preferred_element_type=None):
  """`lax.dot_general` of two int8 arrays, computed with float32 dots, exactly.

  On a CPU without int8 dot instructions (the project's first, AVX2-only host), XLA's int8
  dots ran at half the speed of float32 ones, or at their speed with YNNPACK fusions, which
  slow down the rest of most eval programs (BENCHMARKS.md); so a served int8 model was slower
  than the float one (`int8_dot_path` picks this function there). Every
  product of two int8 values and every sum of at most EXACT_FLOAT32_CONTRACTION (1024) of
  them is an integer of magnitude at most 2^24, which float32 holds exactly in any order;
  longer contractions are split into such chunks whose results are added as int32. Only a
  Dense's dot (one contracting axis, no batch axes) arrives here.
  """
  del precision  # Exact whatever the precision setting.
  (lhs_axes, rhs_axes), batch_axes = dimension_numbers
  if (lhs.dtype, rhs.dtype) != (jnp.int8, jnp.int8) or len(lhs_axes) != 1 or any(batch_axes):
    raise ValueError(f'int8_dot_in_float32 takes Dense dots of int8 arrays, not {lhs.dtype} x '
                     f'{rhs.dtype} with dimension numbers {dimension_numbers}')
  (lhs_axis,), (rhs_axis,) = lhs_axes, rhs_axes
  size = lhs.shape[lhs_axis]
  out = 0
  for start in range(0, size, EXACT_FLOAT32_CONTRACTION):
    chunk = lambda x, axis: jax.lax.slice_in_dim(
        x, start, min(start + EXACT_FLOAT32_CONTRACTION, size), axis=axis).astype(jnp.float32)
    partial = jax.lax.dot_general(chunk(lhs, lhs_axis), chunk(rhs, rhs_axis), dimension_numbers,
                                  precision=jax.lax.Precision.HIGHEST)
    out = out + partial.astype(jnp.int32)
  return out.astype(preferred_element_type or jnp.int32)


# CPU instructions with which XLA's int8 dots are fast (VNNI's int8 multiply-adds, AMX's int8
# tiles): on an AVX512_VNNI CPU they served 1.3-1.4x as fast as the float32 emulation, and
# without any of these they ran at half the speed of float32 dots (BENCHMARKS.md).
INT8_DOT_CPU_FEATURES = ('avx512_vnni', 'avx_vnni', 'amx_int8')
INT8_DOT_SETTINGS = ('auto', 'native', 'float32')  # config.compression.int8_dot
INT8_DOTS = {'native': jax.lax.dot_general, 'float32': int8_dot_in_float32}


def int8_dot_path(setting: str = 'auto', backend: str = '', cpu_features=None) -> str:
  """How int8 x int8 dots run: 'native' (XLA's int8 dots) or 'float32' (`int8_dot_in_float32`;
  the same integers either way).

  'auto' is native on an accelerator and on a CPU with one of INT8_DOT_CPU_FEATURES, float32
  on other CPUs; 'native' and 'float32' force one. `backend` and `cpu_features` default to
  this machine's.
  """
  if setting not in INT8_DOT_SETTINGS:
    raise UserError(f'int8 dot setting {setting!r}; known: {", ".join(INT8_DOT_SETTINGS)}')
  if setting != 'auto':
    return setting
  if (backend or jax.default_backend()) != 'cpu':
    return 'native'
  features = machine.cpu_features() if cpu_features is None else cpu_features
  return 'native' if set(features) & set(INT8_DOT_CPU_FEATURES) else 'float32'


class _Engine:
  """Keeps one conversion and one serving function per model: the same function objects let
  jit reuse their compiled programs. Engines define `_make_convert` and `_make_serving_apply`.

  `int8_dot` is how its int8 x int8 dots run ('native' or 'float32', see `int8_dot_path`) and
  `int8_dots` whether that is XLA's int8 dots.
  """

  name = ''
  numerics = ''  # What the stored integers mean, for results and saved models.

  def __init__(self, int8_dot: str = 'auto'):
    self._convert_fns, self._serving_fns = {}, {}
    self.int8_dot = int8_dot_path(int8_dot)
    self.int8_dots = self.int8_dot == 'native'

  def describe(self) -> dict:
    return {'engine': self.name, 'format': self.numerics, 'int8_dot': self.int8_dot}

  def convert(self, model, params) -> dict:
    if model not in self._convert_fns:
      self._convert_fns[model] = self._make_convert(model)
    return jax.device_get(self._convert_fns[model](params))

  def serving_apply(self, model):
    if model not in self._serving_fns:
      self._serving_fns[model] = self._make_serving_apply(model)
    return self._serving_fns[model]


class AqtInt8(_Engine):
  """int8 weights and activations with AQT's dynamic (AbsMax) quantization.

  `int8_dot` ('auto', 'native' or 'float32') says how each int8 x int8 dot runs, in the QAT
  and the served model alike (`int8_dot_path`).
  """
  name = 'aqt'
  numerics = 'int8: per-output-channel weight scales, per-token activation scales'

  def __init__(self, int8_dot: str = 'auto'):
    super().__init__(int8_dot)
    self._config = aqt_config.fully_quantized(fwd_bits=8, bwd_bits=None,
                                              use_stochastic_rounding=False)
    self._config.fwd.dot_general = INT8_DOTS[self.int8_dot]

  def _dot_general_cls(self, weight_mode: QuantMode):
    return functools.partial(
        aqt_flax.AqtDotGeneral, self._config, prng_name=None,
        lhs_quant_mode=QuantMode.TRAIN,  # Activations are quantized on the fly, never stored.
        rhs_quant_mode=weight_mode,
        rhs_freeze_mode=aqt_flax.FreezerMode.CALIBRATION_AND_VALUE,
        use_legacy_freezer=False)  # Stores a QTensor that works for any input rank.

  def training_model(self, model):
    return model.clone(dot_general_cls=self._dot_general_cls(QuantMode.TRAIN),
                       embedding_quantizer=fake_quantize_rows)

  def _make_convert(self, model):
    convert_model = model.clone(dot_general_cls=self._dot_general_cls(QuantMode.CONVERT))

    @jax.jit  # One program: eager ops would compile once per parameter shape.
    def convert(params):
      _, frozen = convert_model.apply({'params': params}, jnp.ones((1, 1), jnp.int32),
                                      mutable=['aqt'])
      stored = {'int8': {}, 'float': {}}
      for path, qtensor in flax.traverse_util.flatten_dict(frozen['aqt'], sep='/').items():
        kernel_path = path.removesuffix(FROZEN_WEIGHTS) + '/kernel'
        stored['int8'][kernel_path] = {'qvalue': qtensor.qvalue, 'scale': qtensor.scale[0]}
      for path, value in flax.traverse_util.flatten_dict(params, sep='/').items():
        if path.endswith('/embedding'):
          qvalue, scale = quantize_rows(value)
          stored['int8'][path] = {'qvalue': qvalue, 'scale': scale}
        elif path not in stored['int8']:
          stored['float'][path] = value
      return stored

    return convert

  def _make_serving_apply(self, model):
    serve_model = model.clone(dot_general_cls=self._dot_general_cls(QuantMode.SERVE),
                              embedding_quantizer=None)

    def apply(stored, input_ids, deterministic=True, gates=None):
      params, frozen = dict(stored['float']), {}
      for path, q in stored['int8'].items():
        if path.endswith('/embedding'):
          params[path] = q['qvalue'].astype(jnp.float32) * q['scale']
        else:
          # nn.Dense always creates its kernel; in SERVE mode AQT ignores it, so XLA drops
          # this placeholder and only the int8 weights enter the computation.
          params[path] = jnp.zeros(q['qvalue'].shape, jnp.float32)
          frozen[path.removesuffix('/kernel') + FROZEN_WEIGHTS] = aqt_tensor.QTensor(
              qvalue=q['qvalue'], scale=[q['scale']], scale_t=None, bias=[],
              dequant_dtype=jnp.float32)
      variables = {'params': flax.traverse_util.unflatten_dict(params, sep='/'),
                   'aqt': flax.traverse_util.unflatten_dict(frozen, sep='/')}
      return serve_model.apply(variables, input_ids, deterministic=deterministic,
                               gates=gates)

    return apply


class QwixInt8(_Engine):
  """The same int8 scheme with Qwix: quantized training (QT) for QAT, PTQ for serving.

  The rule matches `dot_general` only, i.e. every Dense; the attention einsums stay float as
  with AQT. Weights get per-output-channel absmax scales, activations dynamic per-token ones,
  so the stored form has AQT's layout, and the served model runs int8 x int8 dot_generals:
  always XLA's own (Qwix has no hook for another dot).
  """
  name = 'qwix'
  numerics = AqtInt8.numerics

  def __init__(self):
    super().__init__('native')
    rule = dict(module_path='.*', op_names=('dot_general',), weight_qtype=jnp.int8,
                act_qtype=jnp.int8)
    self._qt_rules = [qwix.QtRule(**rule)]
    self._ptq_rules = [qwix.QuantizationRule(**rule)]
    # Per model: quantize_model makes a new class each call, so reusing its result lets jit
    # reuse compiled programs.
    self._training_models, self._ptq_models = {}, {}

  def training_model(self, model):
    if model not in self._training_models:
      self._training_models[model] = qwix.quantize_model(
          model.clone(embedding_quantizer=fake_quantize_rows), qwix.QtProvider(self._qt_rules))
    return self._training_models[model]

  def _ptq_model(self, model):
    """The PTQ model and its abstract quantized params (leaves say how each is quantized)."""
    if model not in self._ptq_models:
      ptq_model = qwix.quantize_model(model.clone(embedding_quantizer=None),
                                      qwix.PtqProvider(self._ptq_rules))
      abstract = jax.eval_shape(ptq_model.init, jax.random.key(0), jnp.ones((1, 1), jnp.int32))
      self._ptq_models[model] = ptq_model, abstract['params']
    return self._ptq_models[model]

  def _make_convert(self, model):
    _, abstract = self._ptq_model(model)
    quantized_paths = _quantized_leaves(abstract)

    @jax.jit
    def convert(params):
      quantized = qwix.quantize_params(params, abstract)
      stored = {'int8': {}, 'float': {}}
      for path, value in flax.traverse_util.flatten_dict(quantized, sep='/').items():
        if path in quantized_paths:
          stored['int8'][path] = {'qvalue': value.array.qvalue, 'scale': value.array.scale}
        elif path.endswith('/embedding'):
          qvalue, scale = quantize_rows(value)
          stored['int8'][path] = {'qvalue': qvalue, 'scale': scale}
        else:
          stored['float'][path] = value
      return stored

    return convert

  def _make_serving_apply(self, model):
    ptq_model, abstract = self._ptq_model(model)
    quantized_leaves = _quantized_leaves(abstract)

    def apply(stored, input_ids, deterministic=True, gates=None):
      params = dict(stored['float'])
      for path, q in stored['int8'].items():
        if path in quantized_leaves:
          params[path] = quantized_leaves[path].replace(array=qwix.QArray(
              qvalue=q['qvalue'], scale=q['scale'], qtype=jnp.int8))
        else:
          params[path] = q['qvalue'].astype(jnp.float32) * q['scale']
      return ptq_model.apply({'params': flax.traverse_util.unflatten_dict(params, sep='/')},
                             input_ids, deterministic=deterministic, gates=gates)

    return apply


def _quantized_leaves(abstract_params) -> dict:
  """Path -> Qwix's abstract quantized param (a WithAux holding how it is quantized)."""
  return {path: leaf for path, leaf in flax.traverse_util.flatten_dict(abstract_params,
                                                                        sep='/').items()
          if not isinstance(leaf, jax.ShapeDtypeStruct)}


class FixedPointEngine(_Engine):
  """The lab's fixed-point numerics (fixed_point.py): Dense kernels and biases stored as int8
  integers with one power-of-two scale; embeddings and LayerNorm stay float, as in the lab."""

  name = 'fixed'

  def __init__(self, spec: fixed_point.FixedPoint, int8_dot: str = 'auto'):
    super().__init__(int8_dot)
    self.spec = spec

  def describe(self) -> dict:
    return {**self.spec.describe(), 'int8_dot': self.int8_dot}

  def _model(self, model, serve: bool):
    dense_cls = functools.partial(fixed_point.FixedPointDense, numerics=self.spec,
                                  serve=serve, int8_dot=INT8_DOTS[self.int8_dot])
    return model.clone(dense_cls=dense_cls, embedding_quantizer=None)

  def training_model(self, model):
    return self._model(model, serve=False)

  def _quantized(self, path: str) -> bool:
    return ((path.endswith('/dense/kernel') and self.spec.weights)
            or (path.endswith('/dense/bias') and self.spec.biases))

  def _make_convert(self, model):
    del model  # Every Dense is quantized alike.

    @jax.jit
    def convert(params):
      stored = {'int8': {}, 'float': {}}
      scale = jnp.float32(self.spec.scale)
      for path, value in flax.traverse_util.flatten_dict(params, sep='/').items():
        if self._quantized(path):
          stored['int8'][path] = {'qvalue': self.spec.integers(value).astype(jnp.int8),
                                  'scale': scale}
        else:
          stored['float'][path] = value
      return stored

    return convert

  def _make_serving_apply(self, model):
    serve_model = self._model(model, serve=True)

    def apply(stored, input_ids, deterministic=True, gates=None):
      params = dict(stored['float'])
      params.update({path: q['qvalue'] for path, q in stored['int8'].items()})
      return serve_model.apply({'params': flax.traverse_util.unflatten_dict(params, sep='/')},
                               input_ids, deterministic=deterministic, gates=gates)

    return apply


ENGINES = {'aqt': AqtInt8, 'qwix': QwixInt8, 'fixed': FixedPointEngine}
INT8_ENGINES = ('aqt', 'qwix')  # Per-channel and per-token scales, the same int8 scheme.


def engine_of(numerics: dict):
  """The engine that made a stored model, from its `describe()` record. Its int8 dots run as
  this machine runs them best (`int8_dot_path`), whatever the recorded `int8_dot`: the two
  paths compute the same integers."""
  fields = {f: numerics[f] for f in ('width', 'frac_width', 'inputs', 'weights', 'biases')
            if f in numerics}
  return get_engine(numerics['engine'], fields)


def get_engine(name: str, fixed_point_config=None, int8_dot: str = 'auto'):
  """The engine called `name`; 'fixed' takes its numerics from `fixed_point_config` (the
  config's `compression.fixed_point`: width, frac_width, inputs, weights, biases). `int8_dot`
  (config.compression.int8_dot) says how int8 dots run (`int8_dot_path`); Qwix runs XLA's."""
  if name not in ENGINES:
    raise UserError(f'unknown quantization engine {name!r}; known: {", ".join(ENGINES)}')
  if name == 'fixed':
    return FixedPointEngine(fixed_point.FixedPoint(**dict(fixed_point_config or {})), int8_dot)
  if name == 'qwix':
    return QwixInt8()
  return AqtInt8(int8_dot)


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))
