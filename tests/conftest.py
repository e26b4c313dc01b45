"""Test setup: never touch the network; share a compilation cache within the run."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
# Tests run tiny models for a few steps: compile time dominates, so compile with less
# optimization (the programs stay numerically the same up to float reassociation).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0').strip()

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxnas import input_pipeline


XLA_CACHE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '.pytest_cache', 'xla'))


def pytest_configure(config):
  del config
  jax.config.update('jax_compilation_cache_dir', XLA_CACHE)


@pytest.fixture
def test_config(tmp_path):
  from configs import test  # pylint: disable=g-import-not-at-top
  config = test.get_config()
  config.tokenizer.cache_dir = str(tmp_path / 'tokenizers')
  config.compilation_cache_dir = XLA_CACHE
  return config


def toy_split(num_examples: int, seed: int, length: int = 12) -> input_pipeline.EncodedSplit:
  """A learnable task: label 1 iff token 7 appears, else token 8 appears ([CLS]=2, [SEP]=3)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, num_examples).astype(np.int32)
  token_ids = []
  for label in labels:
    body = rng.integers(10, 40, rng.integers(4, length - 2))
    body[rng.integers(len(body))] = 7 if label else 8
    token_ids.append(np.concatenate([[2], body, [3]]).astype(np.int32))
  return input_pipeline.EncodedSplit(token_ids, labels)


def use_noisy_reviews(config):
  """Trains on the noisy reviews (20% of labels flipped), where learned models score 0.6 to
  0.8 and differ: for tests that must tell the splits or the models apart."""
  from configs import test  # pylint: disable=g-import-not-at-top
  config.data.train_path = test.NOISY_REVIEWS
  config.train.epochs = 6  # The flipped labels slow learning: 3 epochs left some at 0.53.


def series_drawn(png_path, min_pixels: int = 30) -> int:
  """How many of matplotlib's first seven cycle colors a saved figure draws with at least
  `min_pixels` pixels (a legend's line has about 80): plots give each study or group one of
  them, in its data and its legend entry, so a group left undrawn is missing (the eighth,
  a gray, is left out: reference lines such as the majority class are gray)."""
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  import matplotlib.colors  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  pixels = np.round(matplotlib.image.imread(png_path)[..., :3] * 255).astype(int)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color'][:7]
  return sum(int(np.all(pixels == np.round(np.array(matplotlib.colors.to_rgb(c)) * 255),
                        axis=-1).sum()) >= min_pixels for c in colors)


def train_config(**overrides) -> ConfigDict:
  return ConfigDict(dict(learning_rate=3e-3, warmup_steps=0, weight_decay=0.0, grad_clip=1.0)
                    | overrides)


@pytest.fixture(scope='session')
def postgres_url():
  """A real PostgreSQL server on loopback for this test session (Debian's `postgresql`).

  Skipped where the server is not installed, unless JAXNAS_REQUIRE_POSTGRES is set (.ci/run
  installs it and sets it, so there the tests always run).
  """
  initdb = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
  if not initdb:
    message = 'PostgreSQL server not installed (apt-get install postgresql)'
    if os.environ.get('JAXNAS_REQUIRE_POSTGRES'):
      pytest.fail(message)
    pytest.skip(message)
  bindir = os.path.dirname(initdb[-1])
  # The server refuses to run as root: run it as the package's `postgres` user.
  as_postgres = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
  data = tempfile.mkdtemp(prefix='jaxnas-postgres-')
  if as_postgres:
    shutil.chown(data, 'postgres', 'postgres')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  run = lambda *cmd: subprocess.run(as_postgres + [os.path.join(bindir, cmd[0]), *cmd[1:]],
                                    check=True, capture_output=True)
  run('initdb', '-D', f'{data}/db', '-U', 'postgres', '--auth=trust')
  run('pg_ctl', '-D', f'{data}/db', '-l', f'{data}/log', '-w', 'start',
      '-o', f'-p {port} -k {data} -c listen_addresses=127.0.0.1')
  try:
    run('createdb', '-h', '127.0.0.1', '-p', str(port), '-U', 'postgres', 'jaxnas')
    yield f'postgresql://postgres@127.0.0.1:{port}/jaxnas'
  finally:
    run('pg_ctl', '-D', f'{data}/db', '-m', 'immediate', 'stop')
    shutil.rmtree(data, ignore_errors=True)
