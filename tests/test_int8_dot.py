"""How int8 x int8 dots run: XLA's own where the machine has int8 dot instructions, the exact
float32 emulation elsewhere, either when the config says so; the same logits both ways."""

import jax
import numpy as np
import pytest

from conftest import toy_split
from jaxnas import config_checks, fixed_point, machine, models, quantization
from jaxnas.errors import UserError
from jaxnas.models import Architecture, BertClassifier

AVX512_NO_VNNI = frozenset({'avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'})


@pytest.mark.parametrize('feature', quantization.INT8_DOT_CPU_FEATURES)
def test_auto_runs_native_dots_on_a_cpu_with_an_int8_dot_instruction(feature):
  assert quantization.int8_dot_path('auto', 'cpu', AVX512_NO_VNNI | {feature}) == 'native'


@pytest.mark.parametrize('features', [AVX512_NO_VNNI, frozenset()])
def test_auto_emulates_in_float32_on_other_cpus_only(features):
  assert quantization.int8_dot_path('auto', 'cpu', features) == 'float32'
  assert quantization.int8_dot_path('auto', 'gpu', features) == 'native'
  assert quantization.int8_dot_path('auto', 'tpu', features) == 'native'


def test_the_setting_forces_either_path():
  vnni = frozenset({'avx512_vnni'})
  assert quantization.int8_dot_path('float32', 'cpu', vnni) == 'float32'
  assert quantization.int8_dot_path('float32', 'gpu', vnni) == 'float32'
  assert quantization.int8_dot_path('native', 'cpu', AVX512_NO_VNNI) == 'native'
  with pytest.raises(UserError, match="int8 dot setting 'int8'"):
    quantization.int8_dot_path('int8', 'cpu', vnni)
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.compression.int8_dot = 'fast'
  with pytest.raises(UserError, match="config.compression.int8_dot='fast' must be one of"):
    config_checks.validate_config(config)


@pytest.mark.parametrize('features, path', [(AVX512_NO_VNNI, 'float32'),
                                            (AVX512_NO_VNNI | {'amx_int8'}, 'native')])
def test_engines_read_the_machine_and_record_their_path(monkeypatch, features, path):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  monkeypatch.setattr(machine, 'cpu_features', lambda: features)
  for engine in (quantization.get_engine('aqt'), quantization.get_engine('fixed')):
    assert engine.int8_dot == path and engine.describe()['int8_dot'] == path
    assert engine.int8_dots == (path == 'native')  # Eval steps keep YNNPACK fusions for these.
  forced = quantization.get_engine('aqt', int8_dot='float32' if path == 'native' else 'native')
  assert forced.describe()['int8_dot'] != path
  assert quantization.get_engine('qwix', int8_dot='float32').describe()['int8_dot'] == 'native'


def test_int8_dots_in_float32_are_exact_at_any_contraction():
  rng = np.random.default_rng(0)
  lhs = rng.integers(-128, 128, (4, 2048), dtype=np.int8)
  rhs = rng.integers(-128, 128, (2048, 3), dtype=np.int8)
  lhs[0], rhs[:, 0] = 127, 127
  rhs[0, 0] = 126  # A sum of 33,032,065: odd and above 2^24, so no float32 dot can hold it.
  numbers = (((1,), (0,)), ((), ()))
  exact = jax.lax.dot_general(lhs, rhs, numbers, preferred_element_type=np.int32)
  one_float32_dot = jax.lax.dot_general(lhs.astype(np.float32), rhs.astype(np.float32), numbers)
  assert int(one_float32_dot[0, 0]) != int(exact[0, 0])
  np.testing.assert_array_equal(
      quantization.int8_dot_in_float32(lhs, rhs, numbers, preferred_element_type=np.int32), exact)


@pytest.mark.parametrize('engine_name', ['aqt', 'fixed'])
def test_both_paths_serve_the_same_logits(engine_name):
  model = BertClassifier(Architecture(2, 2, 32, 64), 40, 16)
  params = models.init_params(model, jax.random.key(0))
  if engine_name == 'fixed':
    params = jax.tree.map(lambda p: p * 20, params)  # Weights of the size Q4.4 can see.
  ids = np.stack([np.pad(t, (0, 16 - len(t))) for t in toy_split(8, 0, 16).token_ids])
  logits = {}
  for path in ('native', 'float32'):
    engine = (quantization.FixedPointEngine(fixed_point.FixedPoint(8, 4), path)
              if engine_name == 'fixed' else quantization.AqtInt8(path))
    apply, stored = jax.jit(engine.serving_apply(model)), engine.convert(model, params)
    hlo = apply.lower(stored, ids).as_text()
    assert any('dot_general' in line and 'xi8>' in line for line in hlo.splitlines()) == (
        path == 'native')  # The two paths are different programs.
    logits[path] = apply(stored, ids)
  assert np.ptp(np.asarray(logits['native'])) > 0.01  # Not a constant function.
  np.testing.assert_array_equal(logits['native'], logits['float32'])
