import datasets
import numpy as np
import pandas as pd
import pytest

from jaxnas import data
from jaxnas.errors import UserError


def test_embedded_split_is_stratified_deterministic_and_subsampled(test_config):
  config = test_config.data
  config.train_size, config.test_size = 0, 0
  full = data.load_splits(config)
  assert (len(full.train), len(full.test)) == (12500, 12500)
  for split in (full.train, full.test):
    assert np.bincount(data.labels_of(split)).tolist() == [6250, 6250]
  again = data.load_splits(config)
  assert data.texts_of(again.train)[:5] == data.texts_of(full.train)[:5]
  config.train_size, config.test_size = 300, 100
  small = data.load_splits(config)
  assert (len(small.train), len(small.test)) == (300, 100)
  assert set(data.texts_of(small.train)) <= set(data.texts_of(full.train))
  config.seed = 1
  assert data.texts_of(data.load_splits(config).train) != data.texts_of(small.train)


def _write_csv(path, rows):
  pd.DataFrame(rows).to_csv(path, index=False)
  return str(path)


def test_local_csv_with_custom_columns(tmp_path, test_config):
  rows = {'review': [f'text number {i}' for i in range(40)], 'y': [i % 2 for i in range(40)]}
  config = test_config.data
  config.update(source='local', train_path=_write_csv(tmp_path / 'd.csv', rows),
                text_column='review', label_column='y', train_size=0, test_size=0)
  splits = data.load_splits(config)
  assert (len(splits.train), len(splits.test)) == (20, 20)
  assert splits.train.column_names == ['text', 'label']


def test_local_parquet_and_json_with_test_file(tmp_path, test_config):
  frame = pd.DataFrame({'text': ['good', 'bad', 'fine', 'awful'], 'label': [1, 0, 1, 0]})
  frame.to_parquet(tmp_path / 'train.parquet')
  frame.to_json(tmp_path / 'test.jsonl', orient='records', lines=True)
  config = test_config.data
  config.update(source='local', train_path=str(tmp_path / 'train.parquet'),
                test_path=str(tmp_path / 'test.jsonl'), train_size=0, test_size=0)
  splits = data.load_splits(config)
  assert (len(splits.train), len(splits.test)) == (4, 4)


@pytest.mark.parametrize('rows, columns, message', [
    (None, {}, 'not found'),
    ({'body': ['a', 'b'], 'label': [0, 1]}, {}, 'missing column'),
    ({'text': ['a', 'b', 'c', 'd'], 'label': [1, 1, 1, 1]}, {}, 'fewer than two classes'),
    ({'text': ['a', 'b', 'c', 'd'], 'label': ['x', 'y', 'x', 'y']}, {}, 'non-negative integers'),
])
def test_local_data_errors(tmp_path, test_config, rows, columns, message):
  path = str(tmp_path / 'missing.csv') if rows is None else _write_csv(tmp_path / 'd.csv', rows)
  config = test_config.data
  config.update(source='local', train_path=path, train_size=0, test_size=0, **columns)
  with pytest.raises(UserError, match=message):
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
      'train': datasets.Dataset.from_dict({'text': ['a', 'b', 'c'], 'label': [0, 1, 0]}),
      'test': datasets.Dataset.from_dict({'text': ['d', 'e'], 'label': [1, 0]}),
      'unsupervised': datasets.Dataset.from_dict({'text': ['f'], 'label': [-1]}),
  })
  requested = []
  monkeypatch.setattr(datasets, 'load_dataset', lambda name: requested.append(name) or published)
  config = test_config.data
  config.update(source='imdb', train_size=0, test_size=0)
  splits = data.load_splits(config)
  assert requested == ['imdb']
  assert data.texts_of(splits.train) == ['a', 'b', 'c'] and data.texts_of(splits.test) == ['d', 'e']


def test_hub_failure_is_one_clear_error(monkeypatch, test_config):
  def offline(name):
    raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")
  monkeypatch.setattr(datasets, 'load_dataset', offline)
  test_config.data.source = 'imdb'
  with pytest.raises(UserError, match='embedded default'):
    data.load_splits(test_config.data)
