"""The errors a user can cause, and how every command line reports them.

Why one module: a user's mistake (a bad value, a missing or corrupt file, a run that another
process is training, a recipe that diverges) must end in one line that names the value and what
is accepted, with an exit status of its own, and never in a traceback; a bug in the code must
still show its traceback. So every error a user can trigger derives from :class:`UserError`, and
:func:`run_cli` is the one place that turns it into that line.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

CONTINUE = ("run the same command again to continue (finished runs are kept, interrupted ones "
            "resume).")


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


class DiskFullError(UserError):
    """A write found no space left (ENOSPC, or a quota): the message names the folder and the
    bytes the write needed; the file that was there before is kept whole."""

    exit_code = 74  # EX_IOERR


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


class Terminated(KeyboardInterrupt):
    """SIGTERM where a command stops on it as on Ctrl-C (:func:`stop_on_sigterm`)."""


@contextlib.contextmanager
def stop_on_sigterm():
    """Inside: SIGTERM raises :class:`Terminated`, which unwinds like Ctrl-C (the study runner:
    its notebook's kernel is shut down, the manifest says which notebook did not finish).
    Outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def quiet_interrupts() -> None:
    """Ctrl-C while a ``python -m ckd_lib...`` command is still importing (before
    :func:`run_cli` can catch it) prints one line, not a traceback through the imports; the
    process still ends by SIGINT, as Python does."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print(f"\ninterrupted: {CONTINUE}", file=sys.stderr)
            return
        previous(kind, value, traceback)

    sys.excepthook = hook


def run_cli(main: Callable[[], int]) -> int:
    """Run a command line's ``main``: a user's error becomes ``error: ...`` on stderr and its
    exit status, as does a full disk met by a write outside ``ckd_lib.results`` (whose own
    writes say how many bytes they needed); Ctrl-C (and SIGTERM where the command stops on it)
    says how to continue. Anything else is a bug and keeps its traceback."""
    try:
        return main()
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except Terminated:
        print(f"\nstopped by SIGTERM: {CONTINUE}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = Path(error.filename).parent if error.filename else "the output folder"
        print(f"error: no space left on the device of {where} ({error.strerror}"
              f"{f', writing {Path(error.filename).name}' if error.filename else ''}): free some "
              "space there and run the same command again", file=sys.stderr)
        return DiskFullError.exit_code
    except KeyboardInterrupt:
        print(f"\ninterrupted: {CONTINUE}", file=sys.stderr)
        return 130
