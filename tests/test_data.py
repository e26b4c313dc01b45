import collections

import datasets
import numpy as np
import pandas as pd
import pytest

from jaxnas import data
from jaxnas.errors import UserError


def test_embedded_splits_are_deduplicated_disjoint_stratified_and_subsampled(test_config):
  config = test_config.data
  config.update(source='embedded', test_fraction=0.5, validation_size=1000.0, train_size=0,
                test_size=0)
  full = data.load_splits(config)
  # 92 texts occur more than once among the 25,000 reviews: 96 rows repeat an earlier one.
  assert full.duplicates_dropped == 96
  assert (len(full.train), len(full.validation), len(full.test)) == (11452, 1000, 12452)
  texts = [set(data.texts_of(split)) for split in (full.train, full.validation, full.test)]
  assert sum(map(len, texts)) == len(set().union(*texts)) == 25000 - 96  # Disjoint.
  positive = [np.mean(data.labels_of(split)) for split in (full.train, full.validation, full.test)]
  assert max(positive) - min(positive) < 0.002  # Stratified: the same share of each label.
  again = data.load_splits(config)
  assert data.texts_of(again.validation) == data.texts_of(full.validation)
  config.train_size, config.test_size = 300, 100
  small = data.load_splits(config)
  assert (len(small.train), len(small.validation), len(small.test)) == (300, 1000, 100)
  assert set(data.texts_of(small.train)) <= texts[0]
  assert data.texts_of(small.validation) == data.texts_of(full.validation)
  config.validation_size = 0.1
  assert len(data.load_splits(config).validation) == 1246  # A tenth of each label (12,452).
  config.seed = 1
  assert data.texts_of(data.load_splits(config).train) != data.texts_of(small.train)


def test_embedded_labels_are_named_neg_and_pos_as_on_the_hub(test_config):
  config = test_config.data
  config.update(source='embedded', test_fraction=0.5, validation_size=100.0, train_size=2000,
                test_size=0)
  splits = data.load_splits(config)
  assert splits.label_names == ('neg', 'pos')
  # The names fit the reviews: 'worst' is far more often in a review named neg.
  worst = collections.Counter(
      splits.label_names[label] for text, label in zip(data.texts_of(splits.train),
                                                       data.labels_of(splits.train))
      if 'worst' in text.lower())
  assert worst['neg'] > 5 * worst['pos'] > 0


@pytest.mark.parametrize('size, message', [(0.01, 'validation split .* is empty'),
                                           (2.5, 'a whole number'),
                                           (40.0, 'leaves no training data')])
def test_bad_validation_size(tmp_path, test_config, size, message):
  rows = {'text': [f'text number {i}' for i in range(40)], 'label': [i % 2 for i in range(40)]}
  config = test_config.data
  config.update(train_path=_write_csv(tmp_path / 'd.csv', rows), validation_size=size)
  with pytest.raises(UserError, match=message):
    data.load_splits(config)


def _write_csv(path, rows):
  pd.DataFrame(rows).to_csv(path, index=False)
  return str(path)


def test_local_csv_with_custom_columns(tmp_path, test_config):
  rows = {'review': [f'text number {i}' for i in range(40)], 'y': [i % 2 for i in range(40)]}
  config = test_config.data
  config.update(source='local', train_path=_write_csv(tmp_path / 'd.csv', rows),
                text_column='review', label_column='y', test_fraction=0.5,
                validation_size=4.0, train_size=0, test_size=0)
  splits = data.load_splits(config)
  assert (len(splits.train), len(splits.validation), len(splits.test)) == (16, 4, 20)
  assert splits.train.column_names == ['text', 'label']


def test_local_parquet_and_json_with_test_file(tmp_path, test_config):
  frame = pd.DataFrame({'text': ['good', 'bad', 'fine', 'awful'], 'label': [1, 0, 1, 0]})
  frame.to_parquet(tmp_path / 'train.parquet')
  frame.to_json(tmp_path / 'other.jsonl', orient='records', lines=True)
  other = pd.DataFrame({'text': ['good film', 'bad film', 'fine film', 'awful film'],
                        'label': [1, 0, 1, 0]})
  other.to_json(tmp_path / 'test.jsonl', orient='records', lines=True)
  config = test_config.data
  config.update(source='local', train_path=str(tmp_path / 'train.parquet'),
                test_path=str(tmp_path / 'test.jsonl'), validation_size=2.0, train_size=0,
                test_size=0)
  splits = data.load_splits(config)
  assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 2, 4)
  config.test_path = str(tmp_path / 'other.jsonl')  # The same texts: none left to train on.
  with pytest.raises(UserError, match=r'train split .* is empty \(4 rows dropped'):
    data.load_splits(config)


@pytest.mark.parametrize('rows, columns, message', [
    (None, {}, 'not found'),
    ({'body': ['a', 'b'], 'label': [0, 1]}, {}, 'missing column'),
    ({'text': ['a', 'b', 'c', 'd'], 'label': [1, 1, 1, 1]}, {}, 'fewer than two classes'),
    ({'text': ['a', 'b', 'c', 'd'], 'label': [0.5, 1.5, 0.5, 1.5]}, {}, 'integers or names'),
])
def test_local_data_errors(tmp_path, test_config, rows, columns, message):
  path = str(tmp_path / 'missing.csv') if rows is None else _write_csv(tmp_path / 'd.csv', rows)
  config = test_config.data
  config.update(source='local', train_path=path, train_size=0, test_size=0, **columns)
  with pytest.raises(UserError, match=message):
    data.load_splits(config)


@pytest.mark.parametrize('labels, names', [
    (['pos', 'neg'], ('neg', 'pos')), (['positive', 'negative'], ('negative', 'positive')),
    ([5, 0], ('0', '5')), ([2, 1], ('1', '2'))])
def test_labels_of_any_type_become_contiguous_ids_in_sorted_order(tmp_path, test_config, labels,
                                                                  names):
  texts = [f'review {i}' for i in range(40)]
  rows = {'text': texts, 'label': [labels[i % 2] for i in range(40)]}
  config = test_config.data
  config.update(train_path=_write_csv(tmp_path / 'd.csv', rows), test_fraction=0.5,
                validation_size=4.0)
  splits = data.load_splits(config)
  assert splits.label_names == names
  by_text = dict(zip(texts, rows['label']))
  for split in (splits.train, splits.validation, splits.test):
    assert [names[i] for i in data.labels_of(split)] == [
        str(by_text[t]) for t in data.texts_of(split)]


def test_a_label_only_in_the_test_file_is_refused(tmp_path, test_config):
  config = test_config.data
  config.update(train_path=_write_csv(tmp_path / 'train.csv', {'text': ['a', 'b', 'c', 'd'],
                                                              'label': ['pos', 'neg'] * 2}),
                test_path=_write_csv(tmp_path / 'test.csv', {'text': ['e', 'f'],
                                                            'label': ['pos', 'neutral']}))
  with pytest.raises(UserError, match=r"test labels \['neutral'\] never occur in the training"):
    data.load_splits(config)


def test_empty_split_and_unknown_source(tmp_path, test_config):
  _write_csv(tmp_path / 'train.csv', {'text': ['a', 'b'], 'label': [0, 1]})
  (tmp_path / 'test.csv').write_text('text,label\n')
  config = test_config.data
  config.update(source='local', train_path=str(tmp_path / 'train.csv'),
                test_path=str(tmp_path / 'test.csv'), train_size=0, test_size=0)
  with pytest.raises(UserError, match='empty'):
    data.load_splits(config)
  config.source = 'kaggle'
  with pytest.raises(UserError, match='unknown data source'):
    data.load_splits(config)


def test_hub_path_uses_published_splits(monkeypatch, test_config):
  published = datasets.DatasetDict({
      'train': datasets.Dataset.from_dict({'text': ['a', 'b', 'c', 'a', 'd'],
                                           'label': [0, 1, 0, 0, 1]}),
      'test': datasets.Dataset.from_dict({'text': ['d', 'e'], 'label': [1, 0]}),
      'unsupervised': datasets.Dataset.from_dict({'text': ['f'], 'label': [-1]}),
  })
  requested = []
  monkeypatch.setattr(datasets, 'load_dataset', lambda name: requested.append(name) or published)
  config = test_config.data
  config.update(source='imdb', validation_size=1.0, train_size=0, test_size=0)
  splits = data.load_splits(config)
  assert requested == ['imdb']
  # The repeated 'a', and 'd' (also a test review), are dropped from training.
  assert splits.duplicates_dropped == 2
  assert sorted(data.texts_of(splits.train) + data.texts_of(splits.validation)) == ['a', 'b', 'c']
  assert len(splits.validation) == 1 and data.texts_of(splits.test) == ['d', 'e']


def test_hub_failure_is_one_clear_error(monkeypatch, test_config):
  def offline(name):
    raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")
  monkeypatch.setattr(datasets, 'load_dataset', offline)
  test_config.data.source = 'imdb'
  with pytest.raises(UserError, match='embedded default'):
    data.load_splits(test_config.data)
