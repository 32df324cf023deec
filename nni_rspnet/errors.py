"""Errors a user can fix, with one base class, and the one exception of an interrupted run.

Every mistake in a user's own config, architecture, data, model file or experiment is a ``UserError``
whose message names the offending file, key or label and what was expected. The command line
(``cli.main``) and the nnictl trial catch ``UserError`` once and print it as one line; anything else
is a bug and keeps its traceback.

The subclasses also derive from the built-in exception a caller would expect (``ValueError`` for bad
values, ``RuntimeError`` for a failed experiment, ``OSError`` for an output that cannot be written),
so ``except ValueError`` keeps working.

``Interrupted`` is a ``KeyboardInterrupt`` whose message says what was kept and how to continue; the
command line prints it as one line and exits with status 130, and writes no result.
"""
from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


class UserError(Exception):
    """A mistake the user can fix; the message names it (printed as one line, exit status 2)."""


class ConfigError(UserError, ValueError):
    """A bad configuration file, key or value; the message names it."""


class ArchError(UserError, ValueError):
    """An architecture that does not fit its space; the message names the label (and the file)."""


class DataError(UserError, ValueError):
    """Missing or malformed data; the message names the file or folder and what was expected."""


class ModelFileError(UserError, ValueError):
    """A model file or checkpoint that cannot be used; the message names it."""


class NniError(UserError, RuntimeError):
    """An nnictl experiment that failed to start, failed, or timed out; the message names it."""


class OutputError(UserError, OSError):
    """An output that cannot be written (a file where a folder is due, no permission, disk full)."""


class DivergedError(UserError, FloatingPointError):
    """A loss or weight became NaN or infinite: the run stopped, nothing non-finite was written."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT); the message says which checkpoint was kept and how to resume."""
