"""int8 quantization behind a narrow engine interface; AQT (`aqt.jax.v2`) is the engine.

An engine does three things to a `BertClassifier`:
  * `training_model(model)`: the quantization-aware model (int8 forward, straight-through
    gradients) used whenever a compressed model is trained;
  * `convert(model, params)`: the stored int8 form, a plain dict of arrays that checkpoints as
    is: {'int8': {path: {'qvalue': int8, 'scale': float32}}, 'float': {path: array}};
  * `serving_apply(model)`: `apply(stored, input_ids) -> logits` that runs from the stored form.

Every Dense runs an AQT int8 x int8 dot_general with per-output-channel weight scales and
dynamic per-token activation scales. Embedding tables are stored as int8 with one scale per
row and dequantized on lookup (the QAT model sees the same rounding), so the whole checkpoint
is about 4x smaller than the float one; biases and LayerNorm parameters stay float32.
"""

import functools

import flax
import jax
import jax.numpy as jnp
from aqt.jax.v2 import aqt_tensor
from aqt.jax.v2 import config as aqt_config
from aqt.jax.v2.flax import aqt_flax
from aqt.jax.v2.utils import QuantMode

from jaxnas.errors import UserError

INT8_MAX = 127
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


class AqtInt8:
  """int8 weights and activations with AQT's dynamic (AbsMax) quantization."""

  def __init__(self):
    self._config = aqt_config.fully_quantized(fwd_bits=8, bwd_bits=None,
                                              use_stochastic_rounding=False)
    # Per model: the same function object lets jit reuse its compiled program.
    self._convert_fns, self._serving_fns = {}, {}

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

  def convert(self, model, params) -> dict:
    if model not in self._convert_fns:
      self._convert_fns[model] = self._make_convert(model)
    return jax.device_get(self._convert_fns[model](params))

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

  def serving_apply(self, model):
    if model not in self._serving_fns:
      self._serving_fns[model] = self._make_serving_apply(model)
    return self._serving_fns[model]

  def _make_serving_apply(self, model):
    serve_model = model.clone(dot_general_cls=self._dot_general_cls(QuantMode.SERVE),
                              embedding_quantizer=None)

    def apply(stored, input_ids, deterministic=True):
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
      return serve_model.apply(variables, input_ids, deterministic=deterministic)

    return apply


ENGINES = {'aqt': AqtInt8}


def get_engine(name: str):
  if name not in ENGINES:
    raise UserError(f'unknown quantization engine {name!r}; known: {", ".join(ENGINES)}')
  return ENGINES[name]()


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))
