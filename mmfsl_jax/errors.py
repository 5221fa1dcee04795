"""Errors that mean "the user asked for something that cannot work": the CLI prints their
message and exits non-zero without a traceback."""


class UserError(ValueError):
  """A bad config, path, dataset or request, with a message that says how to fix it."""


class ConfigError(UserError):
  """A bad config name, key or value."""


class CheckpointError(UserError):
  """A workdir without a usable checkpoint, or one trained with a different config."""
