import os

from jaxnas import data, tokenizer


def test_trains_bert_style_uncased_wordpiece_and_caches(test_config):
  config = test_config.tokenizer
  config.max_length = 8
  texts = ['The movie was GREAT, truly great!', 'A terrible, terrible film.'] * 20
  first = tokenizer.get_tokenizer(config, texts, 'data-a')
  assert first.token_to_id('[PAD]') == tokenizer.PAD_ID
  ids = tokenizer.encode(first, ['GREAT movie', 'the movie was great ' * 10])
  assert ids[0][0] == first.token_to_id('[CLS]') and ids[0][-1] == first.token_to_id('[SEP]')
  assert first.decode(ids[0].tolist()) == 'great movie'  # Uncased.
  assert len(ids[1]) == 8  # Truncated to max_length, [SEP] kept.
  cached = os.listdir(os.path.expanduser(config.cache_dir))
  assert len(cached) == 1
  # Same data: loaded from the cache (different texts passed would otherwise change the vocab).
  again = tokenizer.get_tokenizer(config, ['zzz'] * 5, 'data-a')
  assert again.get_vocab() == first.get_vocab()
  # Different training data: a new cache entry.
  tokenizer.get_tokenizer(config, ['zzz'] * 5, 'data-b')
  assert len(os.listdir(os.path.expanduser(config.cache_dir))) == 2


def test_truncation_keeps_the_start_or_the_end_and_is_saved_with_the_tokenizer(test_config,
                                                                               tmp_path):
  config = test_config.tokenizer
  config.max_length = 6
  texts = ['one two three four five six seven eight'] * 20
  decoded = {}
  for side in ('right', 'left'):
    config.truncation_side = side
    tok = tokenizer.get_tokenizer(config, texts, 'data')
    (ids,) = tokenizer.encode(tok, texts[:1])
    assert ids[0] == tok.token_to_id('[CLS]') and ids[-1] == tok.token_to_id('[SEP]')
    decoded[side] = tok.decode(ids.tolist())
    tok.save(str(tmp_path / f'{side}.json'))  # As saved with a model: reloads the same way.
    reloaded = tokenizer.load_tokenizer(str(tmp_path / f'{side}.json'))
    assert tokenizer.encode(reloaded, texts[:1])[0].tolist() == ids.tolist()
  assert decoded == {'right': 'one two three four', 'left': 'five six seven eight'}


def test_training_gives_the_same_vocabulary_every_time(test_config):
  # The trainer numbers '##' letters in hash-map order, which changes from one training to the
  # next, and breaks ties between merges by those numbers: on these reviews, full of equally
  # frequent words, 9 of 10 trainings gave different vocabularies before the letters were fixed.
  texts = data.texts_of(data.load_splits(test_config.data).train)
  vocabs = [tokenizer.train_wordpiece(texts, vocab_size=500).get_vocab() for _ in range(10)]
  assert all(vocab == vocabs[0] for vocab in vocabs[1:])
  assert [vocabs[0][t] for t in tokenizer.SPECIAL_TOKENS] == list(range(5))
  # The fixed letters are ordinary vocabulary, not special tokens matched in raw text.
  tok = tokenizer.train_wordpiece(texts, vocab_size=500)
  assert '##a' in tok.get_vocab() and '##a' not in tok.encode('x ##a').tokens
