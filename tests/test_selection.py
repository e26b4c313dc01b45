"""Selection never sees the test split, on data whose splits score differently (the noisy
reviews: a learned model scores about 0.8, not 1.0 on every split)."""

import csv

from conftest import use_noisy_reviews
from jaxnas import runner, stats, workflows


def _write(path, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['text', 'label'])
    writer.writerows(rows)


def _run(test_config, workdir, train_file, test_file):
  test_config.data.train_path, test_config.data.test_path = str(train_file), str(test_file)
  spec = runner.RunSpec(workflow='baseline', sampler='random', n_trials=2, workdir=str(workdir),
                        storage='', study_name='test')
  return runner.run(spec, test_config)['runs']['baseline']


def test_flipped_test_labels_change_test_accuracy_only(tmp_path, test_config):
  use_noisy_reviews(test_config)
  with open(test_config.data.train_path) as f:
    rows = list(csv.reader(f))[1:]
  # 243 training and 60 validation reviews, and 97 test reviews: no accuracy but 0 and 1 is
  # the same on validation and test (k/60 = j/97), so a swapped split cannot go unseen.
  _write(tmp_path / 'train.csv', rows[:303])
  _write(tmp_path / 'test.csv', rows[303:])
  _write(tmp_path / 'flipped.csv', [(text, 1 - int(label)) for text, label in rows[303:]])
  true, flipped = (_run(test_config, tmp_path / name, tmp_path / 'train.csv', tmp_path / test)
                   for name, test in (('true', 'test.csv'), ('flipped', 'flipped.csv')))
  assert [t['params'] for t in true['trials']] == [t['params'] for t in flipped['trials']]
  assert [t['value'] for t in true['trials']] == [t['value'] for t in flipped['trials']]
  assert true['best']['number'] == flipped['best']['number']
  for a, b in zip(true['trials'], flipped['trials']):  # Every review's verdict turned over.
    assert abs(a['test_accuracy'] + b['test_accuracy'] - 1.0) < 1e-9
  # The recorded objective and test accuracy are the saved best model's on the validation and
  # the test reviews, recomputed here (a model that learned: not 0.5, and not 1.0 either).
  best = true['best']
  assert 0.6 < best['value'] < 0.95 and 0.6 < best['test_accuracy'] < 0.95
  test_config.data.test_path = str(tmp_path / 'test.csv')
  _, exp, trained = runner._load_for_evaluation(  # pylint: disable=protected-access
      true['best_model_dir'], test_config)
  validation = workflows.score_float(exp, trained, exp.validation_split)
  test = workflows.score_float(exp, trained)
  assert (best['n_validation'], best['n_test']) == (60, 97)
  assert abs(best['value'] - validation['accuracy']) < 1e-9
  assert best['test_correct'] == stats.pack_correct(test['correct'])
