"""BERT-style uncased WordPiece tokenizers, trained locally on the train split and cached."""

import hashlib
import os

import numpy as np
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from jaxnas.errors import UserError

PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID = 0  # [PAD] is trained first, so it gets id 0; `get_tokenizer` checks this.


def get_tokenizer(config, train_texts, data_description: str,
                  announce=None) -> tokenizers.Tokenizer:
  """A tokenizer from the hub (config.name) or trained on `train_texts` and cached on disk;
  `announce(line)`, if given, is told of a download or a training before it starts.

  The cache key covers what the tokenizer was trained on (the data description, which names
  the source, sizes and seed) and the vocabulary size, so a different training set never
  reuses a stale vocabulary.
  """
  announce = announce or (lambda _: None)
  if config.name:
    announce(f'tokenizer: loading {config.name!r} from the Hugging Face hub')
    tokenizer = _from_hub(config.name)
  else:
    # 'ids=sorted,merges=fixed': tokenizers cached before `train_wordpiece` fixed its ids and
    # then its merges are trained again.
    key_text = f'{data_description}|vocab={config.vocab_size}|ids=sorted,merges=fixed'
    key = hashlib.sha256(key_text.encode()).hexdigest()
    path = os.path.join(os.path.expanduser(config.cache_dir), f'wordpiece-{key[:16]}.json')
    tokenizer = _load_cached(path)
    if tokenizer is None:
      announce(f'tokenizer: training a WordPiece vocabulary of {config.vocab_size:,} tokens '
               f'on {len(train_texts):,} training examples (cached for later runs)')
      tokenizer = train_wordpiece(train_texts, config.vocab_size)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp_path = f'{path}.tmp{os.getpid()}'
      tokenizer.save(tmp_path)
      os.replace(tmp_path, path)  # Atomic: concurrent workers never read a half-written file.
  return _configured(tokenizer, config.max_length, config.truncation_side)


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """A tokenizer saved with a model, truncating as it did when the model was trained."""
  tokenizer = _load_cached(path)
  if tokenizer is None or tokenizer.truncation is None:
    raise UserError(f'cannot read tokenizer {path} (or it has no truncation length)')
  return _configured(tokenizer, tokenizer.truncation['max_length'],
                     tokenizer.truncation['direction'])


def _configured(tokenizer, max_length: int, truncation_side: str):
  """No padding (the input pipeline pads), truncation to `max_length` tokens with [CLS] and
  [SEP]: 'right' keeps a text's start, 'left' its end."""
  if tokenizer.token_to_id(PAD) != PAD_ID:
    raise UserError(f'tokenizer must map {PAD} to id {PAD_ID}')
  tokenizer.no_padding()
  tokenizer.enable_truncation(max_length, direction=truncation_side)
  return tokenizer


def train_wordpiece(texts, vocab_size: int) -> tokenizers.Tokenizer:
  """A WordPiece vocabulary learned from `texts`, the same one every time.

  The trainer (BPE underneath) numbers the continuing-subword tokens ('##e') in hash-map
  order, which differs from one training to the next even within a process, and breaks ties
  between equally frequent merges by those numbers: the same data gave other vocabularies
  (9 sets in 10 trainings on 300 short reviews) and so other tokenizations and models for a
  seed (huggingface/tokenizers#1794). A first training finds the '##' letters (a set, the
  same every time); the second is handed them up front, sorted, after the special tokens,
  which fixes their numbers and so every merge. The result is renumbered: the special tokens
  first, in SPECIAL_TOKENS order, then the rest sorted.
  """
  def learn(extra_special_tokens):
    learner = tokenizers.Tokenizer(models.WordPiece(unk_token=UNK))
    learner.normalizer = normalizers.BertNormalizer(lowercase=True)
    learner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    learner.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS) + extra_special_tokens,
        show_progress=False))
    return learner

  continuing_letters = sorted(token for token in learn([]).get_vocab()
                              if token.startswith('##') and len(token) == 3)
  learner = learn(continuing_letters)
  learned = sorted(set(learner.get_vocab()) - set(SPECIAL_TOKENS))
  # A new tokenizer: the learner also treats every '##' letter as an added special token.
  tokenizer = tokenizers.Tokenizer(models.WordPiece(
      {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + learned)}, unk_token=UNK))
  tokenizer.normalizer, tokenizer.pre_tokenizer = learner.normalizer, learner.pre_tokenizer
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f'{CLS} $A {SEP}',
      special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))])
  return tokenizer


def encode(tokenizer: tokenizers.Tokenizer, texts) -> list[np.ndarray]:
  """Token ids per text ([CLS] ... [SEP], truncated to the tokenizer's max length)."""
  return [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(list(texts))]


def _load_cached(path):
  if not os.path.exists(path):
    return None
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception:  # A damaged cache entry is retrained, not fatal.
    return None


def _from_hub(name):
  try:
    return tokenizers.Tokenizer.from_pretrained(name)
  except Exception as e:
    raise UserError(f'could not load tokenizer {name!r} from the Hugging Face hub '
                    f'({type(e).__name__}); leave --config.tokenizer.name empty to train one '
                    'locally') from e
