"""The Qwix int8 engine: same interface and stored layout as AQT, real int8 serving."""

import flax
import jax
import numpy as np
import pytest

from conftest import toy_split
from jaxnas import models, quantization, train, workflows
from jaxnas.models import Architecture, BertClassifier

# Qwix 0.1.8 checks for flax's deprecated nnx.VariableState on every op.
pytestmark = pytest.mark.filterwarnings('ignore:.*VariableState:DeprecationWarning')

ARCH = Architecture(2, 2, 64, 128, identity=('layer_0/query', 'pooler'))


@pytest.fixture(scope='module')
def model():
  return BertClassifier(ARCH, 40, 16)


def _params(model):
  return models.init_params(model, jax.random.key(0))


def test_config_selects_qwix():
  assert isinstance(quantization.get_engine('qwix'), quantization.QwixInt8)


def test_training_model_is_reused_so_jit_reuses_its_programs(model):
  engine = quantization.QwixInt8()
  assert engine.training_model(model) is engine.training_model(model)


def test_stored_form_has_the_aqt_layout_and_is_about_4x_smaller():
  model = BertClassifier(Architecture(2, 4, 256, 512), 2000, 16)
  params = _params(model)
  qwix_int8 = quantization.QwixInt8().convert(model, params)
  aqt_int8 = quantization.AqtInt8().convert(model, params)
  ratio = quantization.tree_bytes(params) / quantization.tree_bytes(qwix_int8)
  assert 3.5 < ratio <= 4.0
  assert quantization.tree_bytes(qwix_int8) == quantization.tree_bytes(aqt_int8)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(qwix_int8) == shapes(aqt_int8)
  for path, q in qwix_int8['int8'].items():
    assert q['qvalue'].dtype == np.int8, path
    # Both are absmax per output channel; rounding may differ by one step at ties.
    diff = np.abs(q['qvalue'].astype(int) - aqt_int8['int8'][path]['qvalue'].astype(int))
    assert diff.max() <= 1, path
    np.testing.assert_allclose(q['scale'], aqt_int8['int8'][path]['scale'], rtol=1e-6)


@pytest.fixture
def experiment(test_config, monkeypatch):
  config = test_config
  config.tokenizer.max_length = 16
  config.train.update(learning_rate=3e-3, warmup_steps=0, epochs=3, batch_size=16)
  config.compression.update(retrain_epochs=3, retrain_learning_rate=1e-3, weight_sparsity=0.85,
                            quant_engine='qwix')
  monkeypatch.setattr(workflows.Experiment, 'model_settings', lambda self: dict(
      vocab_size=40, max_length=16, num_classes=2, dropout_rate=0.0,
      attention_dropout_rate=0.0))
  trainer = train.Trainer(16, 64, (16,), seed=0, show_progress=False)
  return workflows.Experiment(config, tokenizer=None, train_split=toy_split(256, 0, 16),
                              validation_split=toy_split(128, 2, 16),
                              test_split=toy_split(256, 1, 16), trainer=trainer,
                              num_classes=2, engine=quantization.QwixInt8())


def test_qwix_qat_recovers_accuracy_and_keeps_masks(experiment):
  trained, record, test = workflows.train_float(experiment, Architecture(2, 2, 32, 64))
  assert record['float_validation_accuracy'] > 0.9 and test['accuracy'] > 0.9
  compressed = workflows.compress(experiment, trained)
  retrained, _ = workflows.post_compression_training(experiment, compressed)
  assert retrained.accuracy > compressed.accuracy + 0.05
  assert retrained.accuracy > 0.9
  flat = flax.traverse_util.flatten_dict(retrained.params, sep='/')
  for path, mask in compressed.masks.items():
    assert np.all(np.asarray(flat[path])[mask == 0] == 0), path
  int8 = retrained.int8['int8']
  for path, mask in compressed.masks.items():  # Pruned weights are stored as int8 zeros.
    assert np.all(int8[path]['qvalue'][mask == 0] == 0), path

  comparison = workflows.compare_engines(experiment, trained)
  assert comparison['float_test_accuracy'] == test['accuracy']
  assert set(comparison['engines']) == {'aqt', 'qwix'}
  qwix_record = comparison['engines']['qwix']
  # Same masks, same engine.
  assert qwix_record['int8_validation_accuracy'] == compressed.accuracy
  assert qwix_record['sparsity'] == pytest.approx(0.85, abs=1e-3)
  assert qwix_record['model_bytes'] == comparison['engines']['aqt']['model_bytes']
  assert comparison['float_model_bytes'] / qwix_record['model_bytes'] > 3.0
