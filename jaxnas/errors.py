"""The one exception type the launcher turns into a single error line and a non-zero exit."""


class UserError(Exception):
  """Bad input from the user: a flag, a config value, a file, a storage URL, a checkpoint."""
