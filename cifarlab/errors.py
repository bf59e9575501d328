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


def did_you_mean(word: str, valid) -> str:
    """" (did you mean 'x'?)" for the closest valid name to a misspelt `word`, or "" when none is close."""
    import difflib
    close = difflib.get_close_matches(word, [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
