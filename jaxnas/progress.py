"""Progress bars on a terminal, plain progress lines anywhere else.

Piped to a file, tqdm's nested bars write carriage returns and cursor moves on every refresh
(about 900 lines for the main job). Off a terminal a bar instead writes one plain line when
it starts (what runs, and how much of it), then at most one every `PLAIN_INTERVAL_SECONDS`,
and its final count once.
"""

import io
import os
import re
import sys
import time

from tqdm import tqdm

PLAIN_INTERVAL_SECONDS = 30
# A pty that was given no size (`script -qc ...` with COLUMNS unset) reports 0 x 0, on which
# tqdm draws nothing at all: such a terminal is taken to be this large.
UNSIZED_TERMINAL = (100, 24)
# tqdm's bar without its own time estimate, for a bar whose postfix gives a better one
# (`TimeLeft`): one estimate per line.
WITHOUT_ESTIMATE = '{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]'
_CONTROL = re.compile(r'\x1b\[[0-9;]*[A-Za-z]|\r')  # Cursor moves and carriage returns.


class _PlainLines(io.TextIOBase):
  """A stream for tqdm that turns each refresh into one line and drops clearing writes."""

  def __init__(self, stream):
    super().__init__()
    self._stream = stream

  def write(self, text: str) -> int:
    line = _CONTROL.sub('', text).strip()
    if line:
      self._stream.write(line + '\n')
    return len(text)

  def flush(self):
    self._stream.flush()


class _PlainBar(tqdm):
  """A bar that writes plain lines: closing it repeats its final count only if no line has
  shown that count yet."""

  def close(self):
    if not self.disable and self.last_print_n == self.n:
      self.leave = False  # Closes without a line (_PlainLines drops the clearing write).
    super().close()


def bar(iterable=None, stream=None, **kwargs) -> tqdm:
  """`tqdm(iterable, **kwargs)` writing to `stream` (standard error by default)."""
  stream = sys.stderr if stream is None else stream
  if not stream.isatty():
    kwargs.update(file=_PlainLines(stream), mininterval=PLAIN_INTERVAL_SECONDS, ascii=True,
                  ncols=100)
    return _PlainBar(iterable, **kwargs)
  kwargs['file'] = stream
  if not _has_size(stream):
    kwargs.setdefault('ncols', UNSIZED_TERMINAL[0])
    kwargs.setdefault('nrows', UNSIZED_TERMINAL[1])
  return tqdm(iterable, **kwargs)


def _has_size(stream) -> bool:
  try:
    columns, lines = os.get_terminal_size(stream.fileno())
  except (AttributeError, OSError, ValueError):
    return False
  return columns > 0 and lines > 0


def say(line: str, stream=None):
  """Writes `line` (what starts now, what a run will do) at once, above any bar on the
  terminal; standard error by default, like the bars."""
  stream = sys.stderr if stream is None else stream
  tqdm.write(line, file=stream)
  stream.flush()


def refresh_interval(progress_bar: tqdm) -> float:
  """How often to redraw `progress_bar` by hand (`set_postfix_str`): at most once a second,
  and off a terminal (where each redraw is a line) at its plain-line interval."""
  return max(1.0, progress_bar.mininterval)


class TimeLeft:
  """An estimate of a run's time left from the pace of its work so far: `total` equal units
  (training steps), of which `done` are finished. The elapsed time includes everything else
  the run does meanwhile (compilation, scoring), so the estimate does too, in proportion."""

  def __init__(self, total: int, clock=time.monotonic):
    self.total, self.done, self._clock = total, 0, clock
    self._start = clock()

  def seconds(self) -> float | None:
    """None until some work is done, and once all of it is."""
    if not 0 < self.done < self.total:
      return None
    return (self._clock() - self._start) / self.done * max(0, self.total - self.done)

  def text(self) -> str:
    seconds = self.seconds()
    if seconds is None:
      return ''
    if seconds < 90:
      return f'about {seconds:.0f} s left'
    if seconds < 90 * 60:
      return f'about {seconds / 60:.0f} min left'
    return f'about {seconds / 3600:.1f} h left'
