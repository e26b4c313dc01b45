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
