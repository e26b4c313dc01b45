"""The PyTorch reference: `transformers.BertForSequenceClassification` with jaxnas's weights,
and HF Trainer for the epoch case. torch and transformers are imported only when used
(requirements-bench.txt)."""

import contextlib
import sys
import tempfile
import time

import jax
import numpy as np

from jaxnas.bench.measure import timed
from jaxnas.bench.shapes import DROPOUT, LEARNING_RATE
from jaxnas.models import Architecture
from jaxnas.tokenizer import PAD_ID


def torch_model(arch: Architecture, vocab_size: int, params):
  """`BertForSequenceClassification` with jaxnas's math (post-LN, exact GELU, dropout 0.1,
  padding mask, SDPA attention) and the given JAX weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
      num_attention_heads=arch.num_heads, intermediate_size=arch.intermediate_size,
      hidden_act='gelu', hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT,
      max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, num_labels=2,
      pad_token_id=PAD_ID, attn_implementation='sdpa')
  model = transformers.BertForSequenceClassification(config)
  state = {name: torch.from_numpy(np.array(value))
           for name, value in torch_state_dict(arch, jax.device_get(params)).items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [m for m in missing if not m.endswith('position_ids')]
  if missing or unexpected:
    raise ValueError(f'weight mapping: missing {missing}, unexpected {unexpected}')
  return model


def torch_state_dict(arch: Architecture, params) -> dict:
  """JAX parameters under transformers' BERT names (Dense kernels transposed)."""
  state = {}

  def dense(torch_name, p):
    state[f'{torch_name}.weight'] = np.asarray(p['dense']['kernel']).T
    state[f'{torch_name}.bias'] = np.asarray(p['dense']['bias'])

  def norm(torch_name, p):
    state[f'{torch_name}.weight'], state[f'{torch_name}.bias'] = p['scale'], p['bias']

  for jax_name, torch_name in (('token_embeddings', 'word'), ('position_embeddings', 'position'),
                               ('segment_embeddings', 'token_type')):
    state[f'bert.embeddings.{torch_name}_embeddings.weight'] = params[jax_name]['embedding']
  norm('bert.embeddings.LayerNorm', params['embeddings_norm'])
  for i in range(arch.num_layers):
    p, prefix = params[f'layer_{i}'], f'bert.encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      dense(f'{prefix}.attention.self.{name}', p[name])
    dense(f'{prefix}.attention.output.dense', p['attention_output'])
    norm(f'{prefix}.attention.output.LayerNorm', p['attention_norm'])
    dense(f'{prefix}.intermediate.dense', p['intermediate'])
    dense(f'{prefix}.output.dense', p['output'])
    norm(f'{prefix}.output.LayerNorm', p['output_norm'])
  dense('bert.pooler.dense', params['pooler'])
  dense('classifier', params['classifier'])
  return state


class TorchSide:
  """The same model, batches and optimizer (AdamW, clipping, linear decay) in PyTorch."""

  def __init__(self, arch, vocab_size, params, batches):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.model = torch_model(arch, vocab_size, params)
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE,
                                       betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                      lambda step: 1 - step / 10 ** 6)
    self.batches = [self.to_torch(b) for b in batches]

  def to_torch(self, batch):
    ids = self.torch.from_numpy(batch['input_ids']).long()
    return {'input_ids': ids, 'attention_mask': (ids != PAD_ID).long(),
            'labels': self.torch.from_numpy(batch['labels']).long()}

  def train(self) -> float:
    self.model.train()
    start = time.perf_counter()
    for batch in self.batches:
      self.model(**batch).loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
      self.schedule.step()
      self.optimizer.zero_grad()
    return time.perf_counter() - start

  def eval_float(self) -> float:
    self.model.eval()
    start = time.perf_counter()
    with self.torch.inference_mode():
      for batch in self.batches:
        self.model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'])
    return time.perf_counter() - start

  def logits(self, batch):
    self.model.eval()
    with self.torch.inference_mode():
      t = self.to_torch(batch)
      return self.model(input_ids=t['input_ids'], attention_mask=t['attention_mask']).logits


def hf_trainer_epoch(arch: Architecture, exp, params) -> float:
  """Seconds of `Trainer.train()` for one epoch, set up as the original lab did."""
  import datasets  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config, split = exp.config, exp.train_split
  model = torch_model(arch, exp.tokenizer.get_vocab_size(), params)
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=exp.tokenizer,
                                                   pad_token='[PAD]')
  dataset = datasets.Dataset.from_dict({
      'input_ids': [ids.tolist() for ids in split.token_ids],
      'attention_mask': [[1] * len(ids) for ids in split.token_ids],
      'label': split.labels.tolist()})
  with tempfile.TemporaryDirectory() as output_dir:
    args = transformers.TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=config.train.batch_size,
        num_train_epochs=1, learning_rate=config.train.learning_rate, weight_decay=0.0,
        max_grad_norm=config.train.grad_clip, lr_scheduler_type='linear', warmup_steps=0,
        logging_strategy='no', save_strategy='no', eval_strategy='no', report_to=[],
        use_cpu=True, seed=config.seed, disable_tqdm=True)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=transformers.DataCollatorWithPadding(tokenizer))
    with contextlib.redirect_stdout(sys.stderr):  # Its log lines would break the JSON lines.
      _, seconds = timed(trainer.train)
  return seconds
