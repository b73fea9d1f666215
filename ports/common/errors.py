"""The one marker for expected, user-facing failures.

The ``ports`` command prints a ``UserError`` (like a ``ValueError`` from bad input or a
``FileNotFoundError``) as one line; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An expected failure whose message says what to fix."""


class ToolMissing(UserError, RuntimeError):
    """A program or compiler the requested work needs is not installed (message: how to get it)."""
