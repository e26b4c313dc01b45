"""Progress off a terminal: plain lines, no carriage returns or cursor moves."""

import io
import os
import select
import sys

from jaxnas import progress


def test_off_a_terminal_bars_write_plain_lines_at_an_interval(monkeypatch):
  monkeypatch.setattr(progress, 'PLAIN_INTERVAL_SECONDS', 0)
  stream = io.StringIO()  # Not a terminal.
  with progress.bar(total=3, desc='outer', stream=stream) as outer:
    for _ in progress.bar(range(2), desc='inner', leave=False, stream=stream):
      pass
    outer.update(3)
  text = stream.getvalue()
  assert '\r' not in text and '\x1b' not in text
  lines = text.splitlines()
  assert lines and all(line.startswith(('outer', 'inner')) for line in lines)
  assert lines[-1].startswith('outer: 100%') and '3/3' in lines[-1]


def test_time_left_is_the_pace_so_far_times_the_work_left():
  now = [100.0]
  time_left = progress.TimeLeft(total=400, clock=lambda: now[0])
  assert time_left.seconds() is None and time_left.text() == ''  # Nothing timed yet.
  now[0], time_left.done = 130.0, 100  # 100 steps in 30 s: 300 steps left take 90 s.
  assert time_left.seconds() == 90 and time_left.text() == 'about 2 min left'
  time_left.done = 390
  assert time_left.text() == 'about 1 s left'
  time_left.done = 400
  assert time_left.seconds() is None and time_left.text() == ''  # Done: no estimate.


def test_off_a_terminal_the_final_count_is_shown_once(monkeypatch):
  monkeypatch.setattr(progress, 'PLAIN_INTERVAL_SECONDS', 0)  # Every update is a line.
  stream = io.StringIO()
  with progress.bar(total=2, desc='study', stream=stream) as study:
    study.update(1)
    study.update(1)
  assert sum('2/2' in line for line in stream.getvalue().splitlines()) == 1
  stream = io.StringIO()
  monkeypatch.setattr(progress, 'PLAIN_INTERVAL_SECONDS', 3600)  # No line since the first.
  with progress.bar(total=2, desc='study', stream=stream) as study:
    study.update(2)
  assert sum('2/2' in line for line in stream.getvalue().splitlines()) == 1  # On closing.


def test_a_terminal_without_a_size_shows_the_bar(monkeypatch):
  """A pty that nobody gave a size (`script -qc ...` with COLUMNS unset) reports 0 x 0."""
  controller, terminal = os.openpty()
  assert os.get_terminal_size(terminal) == (0, 0)
  shown = b''
  with open(terminal, 'w', closefd=True) as stream:
    monkeypatch.setattr(sys, 'stderr', stream)  # tqdm sizes bars on standard streams only.
    with progress.bar(total=3, desc='study') as study:
      study.update(3)
    stream.flush()
    while select.select([controller], [], [], 0.5)[0]:
      shown += os.read(controller, 65536)
  os.close(controller)
  assert b'study: 100%' in shown and b'3/3' in shown
