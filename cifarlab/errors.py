"""User-facing errors.

Anything a user can get wrong (a config key, a data path, a checksum) raises
`UserError`; the CLI prints its message on one line and exits with code 2.
Everything else is a bug and keeps its traceback.
"""

import contextlib


class UserError(Exception):
    """Bad input: the message says what was wrong and what is valid."""


class DataError(UserError):
    """Data missing, corrupt, or failing verification."""


class ConfigError(UserError):
    """Unknown key, wrong type or invalid value in an experiment config."""


def did_you_mean(word: str, valid, show=repr) -> str:
    """"; did you mean 'x'?" for the valid name closest to a misspelt `word` (difflib's ratio >= 0.6),
    or "" when none is close; `show` writes the name (e.g. as "section.key")."""
    import difflib
    close = difflib.get_close_matches(word, [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {show(close[0])}?" if close else ""


# The signal that stopped this process (Ctrl-C's SIGINT unless a handler notes SIGTERM): the command
# line exits with 128 + it, as a shell reports a process a signal ended.
STOPPED_BY = [2]

# Whether the command line's signal handler has asked this command to stop. Its KeyboardInterrupt
# is raised wherever the main thread is, and code there can swallow it: twice in about 150 SIGTERMs
# sent here as a run started (when torch imports its compiler stack and sympy), and once in CI (stop
# 62), the run trained on and the process ignored the signal (where it was swallowed is not known;
# the stack then showed only training). Training checks this at every step (`stop_if_asked`), and
# `study run` before each claim, so such a stop is raised again there.
STOP_ASKED = [False]
FINISHING = [0]   # > 0 while the cleanup a stop started runs (`finishing`)


@contextlib.contextmanager
def finishing():
    """Around the cleanup a stop started (a claim given back, workers stopped, a tracker closed): a
    further stopping signal meanwhile (a second Ctrl-C, the parent's SIGTERM after the terminal's
    SIGINT, a signal delivered again) is noted in STOP_ASKED but not raised, so it cannot cut that
    cleanup short and leave a run marked running."""
    FINISHING[0] += 1
    try:
        yield
    finally:
        FINISHING[0] -= 1


def stop_if_asked() -> None:
    """Raise KeyboardInterrupt if the command line's handler took a stopping signal that no code
    raised through (see STOP_ASKED); a no-op everywhere else (the Python API installs no handler)."""
    if STOP_ASKED[0]:
        raise KeyboardInterrupt
