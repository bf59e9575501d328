"""User-facing errors.

Anything a user can get wrong (a config key, a data path, a checksum) raises
`UserError`; the CLI prints its message on one line and exits with code 2.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message says what was wrong and what is valid."""


class DataError(UserError):
    """Data missing, corrupt, or failing verification."""


class ConfigError(UserError):
    """Unknown key, wrong type or invalid value in an experiment config."""
