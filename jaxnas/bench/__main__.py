"""`python -m jaxnas.bench`: runs the named cases, one JSON line each (see `jaxnas.bench`)."""

from jaxnas import hugepages

if __name__ == '__main__':
  hugepages.restart_with_huge_pages()  # Before the heavy imports, which a restart would redo.

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import os

from absl import app, flags

from jaxnas import machine, workflows
from jaxnas.bench import cases, jobs, measure
from jaxnas.bench.shapes import SHAPES, data_config
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('cases', ['small', 'large', 'epoch', 'compile'], 'Cases to run, in order.')
flags.DEFINE_enum('against', 'none', ['none', 'torch'], 'Reference to run side by side.')
flags.DEFINE_integer('rounds', 5, 'Alternating JAX/torch timing rounds per fixed-shape case.')
flags.DEFINE_integer('steps', 0, 'Train steps (and eval batches) timed per round; 0: the '
                     "case's own (about 50 examples).")
flags.DEFINE_integer('epoch_train_size', 0, 'Reviews in the epoch case, subsampled from '
                     'the embedded IMDb training split; 0: all 12,500.')
flags.DEFINE_integer('threads', 2, 'torch intra-op threads (XLA uses every core).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'jaxnas computation dtype.')
flags.DEFINE_string('cache_dir', '', 'Persistent compilation cache of the `trial` case.')


def main(argv):
  del argv
  if FLAGS.against == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(FLAGS.threads)
  exp = None
  for case in FLAGS.cases:
    if case in SHAPES or case == 'epoch':
      if exp is None:
        exp = workflows.prepare_experiment(data_config(FLAGS.epoch_train_size),
                                           show_progress=False)
      if case == 'epoch':
        result = cases.epoch_case(exp, against=FLAGS.against, dtype=FLAGS.dtype)
      else:
        result = cases.fixed_shape_case(
            case, exp.train_split, exp.tokenizer.get_vocab_size(), against=FLAGS.against,
            rounds=FLAGS.rounds, steps=FLAGS.steps, dtype=FLAGS.dtype,
            peak=measure.matmul_peak_gflops())
    elif case == 'compile':
      result = jobs.compile_case()
    elif case == 'trial':
      result = jobs.trial_case(FLAGS.cache_dir)
    elif case == 'search':
      result = jobs.search_case()
    else:
      raise app.UsageError(f'unknown case {case!r}')
    result['load_average_1min'] = round(os.getloadavg()[0], 2)  # Other work on the machine.
    result['machine'] = machine.describe()
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
