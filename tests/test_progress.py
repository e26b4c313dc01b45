"""Progress off a terminal: plain lines, no carriage returns or cursor moves."""

import io

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
