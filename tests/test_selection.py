"""Selection never sees the test split: flipping every test label changes the test accuracies
and nothing that the search or its selection did."""

import csv
import random

from jaxnas import runner


def _write(path, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['text', 'label'])
    writer.writerows(rows)


def _run(test_config, workdir, train_file, test_file):
  test_config.data.train_path, test_config.data.test_path = str(train_file), str(test_file)
  test_config.search.space.num_layers = (2,)  # Its 4-layer models stayed at the majority.
  spec = runner.RunSpec(workflow='baseline', sampler='random', n_trials=2, workdir=str(workdir),
                        storage='', study_name='test')
  return runner.run(spec, test_config)['runs']['baseline']


def test_flipped_test_labels_change_test_accuracy_only(tmp_path, test_config):
  with open(test_config.data.train_path) as f:
    rows = list(csv.reader(f))[1:]
  # Shuffled: the file's first 300 rows alone left both trials at the majority class.
  random.Random(0).shuffle(rows)
  _write(tmp_path / 'train.csv', rows[:300])
  _write(tmp_path / 'test.csv', rows[300:])
  _write(tmp_path / 'flipped.csv', [(text, 1 - int(label)) for text, label in rows[300:]])
  true, flipped = (_run(test_config, tmp_path / name, tmp_path / 'train.csv', tmp_path / test)
                   for name, test in (('true', 'test.csv'), ('flipped', 'flipped.csv')))
  assert [t['params'] for t in true['trials']] == [t['params'] for t in flipped['trials']]
  assert [t['value'] for t in true['trials']] == [t['value'] for t in flipped['trials']]
  assert true['best']['number'] == flipped['best']['number']
  for a, b in zip(true['trials'], flipped['trials']):  # Every review's verdict turned over.
    assert abs(a['test_accuracy'] + b['test_accuracy'] - 1.0) < 1e-9
  assert max(t['test_accuracy'] for t in true['trials']) > 0.7  # Models that learned.
