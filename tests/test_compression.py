import flax
import jax
import numpy as np
import pytest

from conftest import toy_split
from jaxnas import checkpoints, models, pruning, quantization, train, workflows
from jaxnas.models import Architecture, BertClassifier

ARCH = Architecture(2, 2, 64, 128, identity=('layer_0/query', 'pooler'))


def trained_params(model, seed=0):
  return models.init_params(model, jax.random.key(seed))


def toy_ids():
  """8 toy reviews padded to 16 tokens."""
  return np.stack([np.pad(ids, (0, 16 - len(ids))) for ids in toy_split(8, 0, 16).token_ids])


@pytest.fixture(scope='module')
def model():
  return BertClassifier(ARCH, 40, 16)


def test_int8_checkpoint_is_about_4x_smaller(tmp_path):
  arch = Architecture(2, 4, 256, 512)
  model = BertClassifier(arch, 2000, 16)
  params = trained_params(model)
  int8 = quantization.AqtInt8().convert(model, params)
  ratio = quantization.tree_bytes(params) / quantization.tree_bytes(int8)
  assert 3.5 < ratio <= 4.0
  checkpoints.save_model(str(tmp_path / 'm'), arch=arch, model_settings={}, float_params=params,
                         tokenizer=_tokenizer(), data={}, int8=int8)
  restored = checkpoints.load_model(str(tmp_path / 'm'))['int8']
  for path, q in restored['int8'].items():
    assert q['qvalue'].dtype == np.int8, path
  disk = lambda name: sum(f.stat().st_size for f in (tmp_path / 'm' / name).rglob('*'))
  assert 3.5 < disk('float') / disk('int8') <= 4.0


def _tokenizer():
  from jaxnas import tokenizer  # pylint: disable=g-import-not-at-top
  return tokenizer.train_wordpiece(['some words for a tiny vocabulary'] * 3, 40)


# Both int8 engines: same interface, same int8 arithmetic (test_fixed_point.py has the lab's
# fixed point). Qwix 0.1.8 checks for flax's deprecated nnx.VariableState on every op.
ENGINES = pytest.mark.parametrize('engine_name', quantization.INT8_ENGINES)
QWIX_WARNING = pytest.mark.filterwarnings('ignore:.*VariableState:DeprecationWarning')


@ENGINES
@QWIX_WARNING
def test_served_int8_logits_match_the_qat_model(model, engine_name):
  engine = quantization.get_engine(engine_name)
  params = trained_params(model)
  ids = toy_ids()
  qat_logits = jax.jit(engine.training_model(model).apply)({'params': params}, ids)
  served_logits = jax.jit(engine.serving_apply(model))(engine.convert(model, params), ids)
  np.testing.assert_allclose(served_logits, qat_logits, atol=1e-5)  # Same int8 arithmetic.
  float_logits = model.apply({'params': params}, ids)
  assert not np.allclose(float_logits, qat_logits, atol=1e-7)  # Quantization is really on.


@ENGINES
@QWIX_WARNING
def test_served_model_computes_int8_matmuls(model, engine_name):
  engine = quantization.get_engine(engine_name, int8_dot='native')
  int8 = engine.convert(model, trained_params(model))
  hlo = jax.jit(engine.serving_apply(model)).lower(int8, np.ones((2, 16), np.int32)).as_text()
  int8_dots = [line for line in hlo.splitlines() if 'dot_general' in line and 'xi8>' in line]
  num_dense = len(int8['int8']) - 3  # Minus the three embedding tables.
  assert len(int8_dots) == num_dense == 5 + 6 + 1  # 6 Dense a layer, 1 identity; classifier.
  assert not any('kernel' in path for path in int8['float'])  # No float copy of a weight.


def test_local_sparsity_is_exact_per_tensor_and_global_overall(model):
  params = trained_params(model)
  local = pruning.measured_sparsity(train.apply_masks(params, pruning.magnitude_masks(params, 0.5)))
  assert all(v == pytest.approx(0.5, abs=1e-3) for v in local['per_tensor'].values())
  masks = pruning.magnitude_masks(params, 0.3, scope='global')
  glob = pruning.measured_sparsity(train.apply_masks(params, masks))
  assert glob['overall'] == pytest.approx(0.3, abs=1e-4)
  assert max(glob['per_tensor'].values()) - min(glob['per_tensor'].values()) > 0.01


def test_identity_layers_are_neither_pruned_nor_quantized(model):
  params = trained_params(model)
  masks = pruning.magnitude_masks(params, 0.5)
  int8 = quantization.AqtInt8().convert(model, params)
  for collection in (masks, int8['int8']):
    assert not any('layer_0/query' in p or p.startswith('pooler') for p in collection)
    assert any('layer_0/key' in p for p in collection)
  assert 'classifier/dense/kernel' in masks  # Pooler identity, classifier still pruned.
  assert not any('embedding' in p or 'norm' in p for p in masks)


def _experiment(test_config):
  split = toy_split(256, seed=0, length=16)
  config = test_config
  config.tokenizer.max_length = 16
  config.train.update(learning_rate=3e-3, warmup_steps=0, epochs=3, batch_size=16)
  config.compression.update(retrain_epochs=3, retrain_learning_rate=1e-3, weight_sparsity=0.85)
  trainer = train.Trainer(16, 64, (16,), seed=0, show_progress=False)
  return workflows.Experiment(config, tokenizer=None, train_split=split,
                              validation_split=toy_split(128, seed=2, length=16),
                              test_split=toy_split(256, seed=1, length=16), trainer=trainer,
                              num_classes=2, engine=quantization.AqtInt8())


def test_post_compression_training_recovers_accuracy_and_keeps_masks(test_config, monkeypatch):
  exp = _experiment(test_config)
  monkeypatch.setattr(workflows.Experiment, 'model_settings', lambda self: dict(
      vocab_size=40, max_length=16, num_classes=2, dropout_rate=0.0,
      attention_dropout_rate=0.0))
  arch = Architecture(2, 2, 32, 64)
  trained, record, test = workflows.train_float(exp, arch)
  assert record['float_validation_accuracy'] > 0.9 and test['accuracy'] > 0.9
  compressed = workflows.compress(exp, trained)
  retrained, _ = workflows.post_compression_training(exp, compressed)
  assert retrained.accuracy > compressed.accuracy + 0.05
  assert retrained.accuracy > 0.9
  flat = flax.traverse_util.flatten_dict(retrained.params, sep='/')
  for path, mask in compressed.masks.items():
    assert np.all(np.asarray(flat[path])[mask == 0] == 0), path
  measured = workflows.compression_record(retrained)['sparsity']
  assert measured == pytest.approx(0.85, abs=1e-3)
