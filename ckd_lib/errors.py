"""The errors a user can cause, and how every command line reports them.

Why one module: a user's mistake (a bad value, a missing or corrupt file, a run that another
process is training, a recipe that diverges) must end in one line that names the value and what
is accepted, with an exit status of its own, and never in a traceback; a bug in the code must
still show its traceback. So every error a user can trigger derives from :class:`UserError`, and
:func:`run_cli` is the one place that turns it into that line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix; ``exit_code`` is the command lines' exit status for it."""

    exit_code = 2

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it in a notebook cell (and papermill then prints): its one
        line on top, as the command lines print it, without the traceback through ckd_lib."""
        return [f"{type(self).__name__}: {one_line(self)}"]


class InputError(UserError, ValueError):
    """A value, file or option that no run can use; the message names it and what is accepted."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist; the message names it."""


class ConfigError(InputError):
    """A config value that no run can use; the message names the value and what is accepted."""


class RunLockedError(UserError):
    """Another live process is training this run now (see ``ckd_lib.engine.bookkeeping``)."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RunDivergedError(UserError):
    """A run's loss or weights became non-finite; its record says ``diverged``."""

    exit_code = 3


def one_line(error: BaseException) -> str:
    """The message of ``error`` with its first line first (details, if any, follow indented).

    An error raised in a DataLoader worker reaches the main process as the same class with the
    worker's formatted traceback for a message; only the original message is kept.
    """
    text = str(error).strip() or type(error).__name__
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    head, *rest = text.splitlines()
    return "\n".join([head] + [f"  {line.strip()}" for line in rest if line.strip()])


def run_cli(main: Callable[[], int]) -> int:
    """Run a command line's ``main``: a user's error becomes ``error: ...`` on stderr and its
    exit status; Ctrl-C says how to continue. Anything else is a bug and keeps its traceback."""
    try:
        return main()
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue (finished runs are kept, "
              "interrupted ones resume).", file=sys.stderr)
        return 130
