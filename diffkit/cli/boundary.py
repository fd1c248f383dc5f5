"""The one place where a user's mistake becomes a message and exit status 2.

Every ``diffkit`` command runs through :func:`answer`: a :class:`~diffkit.errors.UserError`
(raised by the checks of :mod:`diffkit.cli.input_checks`, by the parts' own validation, or by
the commands) is printed as ``diffkit: error: <message>`` and answered with exit status 2. Any
other exception is an internal error and propagates with its traceback. The developer switch
(``--traceback`` anywhere on the command line, or ``DIFFKIT_TRACEBACK=1``) also prints the
traceback of a user error.

Exit statuses: 0 success, 1 internal error or failed check (``diffkit list --check``), 2 a
user's mistake.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

from diffkit.errors import UserError

__all__ = ["TRACEBACK_ENV", "TRACEBACK_FLAG", "answer", "split_traceback_flag", "user_error"]

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "DIFFKIT_TRACEBACK"


def _env_on() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def split_traceback_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--traceback``, and whether tracebacks are wanted (flag or env)."""
    args = [a for a in argv if a != TRACEBACK_FLAG]
    return args, len(args) != len(argv) or _env_on()


def user_error(message: str) -> int:
    """Print ``diffkit: error: message`` on stderr; return exit status 2."""
    sys.stderr.write(f"diffkit: error: {message}\n")
    return 2


def answer(
    call: Callable[[], int],
    *,
    show_traceback: bool,
    user_errors: tuple[type[BaseException], ...] = (UserError,),
) -> int:
    """Run ``call``; a user error (``user_errors``) becomes its message and exit status 2."""
    try:
        return call()
    except user_errors as err:
        if show_traceback:
            traceback.print_exc(file=sys.stderr)
        return user_error(str(err))
