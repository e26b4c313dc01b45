"""Progress bars on a terminal, plain progress lines anywhere else.

Piped to a file, tqdm's nested bars write carriage returns and cursor moves on every refresh
(about 900 lines for the main job). Off a terminal a bar instead writes one plain line when
it starts (what runs, and how much of it) and then at most one every
`PLAIN_INTERVAL_SECONDS`.
"""

import io
import re
import sys

from tqdm import tqdm

PLAIN_INTERVAL_SECONDS = 30
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


def bar(iterable=None, stream=None, **kwargs) -> tqdm:
  """`tqdm(iterable, **kwargs)` writing to `stream` (standard error by default)."""
  stream = sys.stderr if stream is None else stream
  if not stream.isatty():
    kwargs.update(file=_PlainLines(stream), mininterval=PLAIN_INTERVAL_SECONDS, ascii=True,
                  ncols=100)
  else:
    kwargs['file'] = stream
  return tqdm(iterable, **kwargs)
