"""The error type of a user's mistake: a value, file or argument that cannot be used.

Raise :class:`UserError` with a message that names the field, file or value, says what is
wrong and how to fix it. The ``diffkit`` command answers it with that one message on stderr and
exit status 2, without a traceback (``--traceback`` or ``DIFFKIT_TRACEBACK=1`` shows it); any
other exception is an internal error and keeps its traceback (exit status 1).
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A user's mistake; ``str(err)`` is the whole message shown (field, value and fix)."""
