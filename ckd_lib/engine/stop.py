"""Stopping a run between two steps: for a signal (SLURM's time limit, preemption, ``kill``).

Why at a step boundary rather than in the signal handler: the handler interrupts Python anywhere,
possibly between a backward pass and its optimizer update, where the weights and the momentum do
not belong to the same step. So a handler only sets a flag; the trainers look at it after every
step, save a checkpoint that holds the position inside the epoch (or the iteration) and the
partial sums, and raise :class:`RunInterrupted`. The same command resumes exactly there: the
batches of an epoch depend only on (seed, epoch), so the rest of the epoch is replayed as an
uninterrupted run would have seen it.
"""

from __future__ import annotations

import signal
import threading

from ckd_lib.errors import UserError


class RunInterrupted(UserError):
    """The run stopped on request with its checkpoint written; the same command resumes it."""

    exit_code = 124  # what `timeout` uses: stopped before the end, to be continued


_flag = threading.Event()
_reason: list[str] = []
_countdown: list[int] = []


def request_stop(reason: str = "stop requested") -> None:
    """Ask the running trainer to checkpoint and stop after its current step."""
    _reason[:] = [reason]
    _flag.set()


def request_stop_after(steps: int, reason: str = "stop after a fixed number of steps") -> None:
    """Stop after ``steps`` more training steps (tests and benchmarks: a deterministic point)."""
    _countdown[:] = [int(steps)]
    _reason[:] = [reason]


def clear() -> None:
    _flag.clear()
    _reason.clear()
    _countdown.clear()


def step_done() -> bool:
    """Called by a trainer after each step: True when it must stop now."""
    if _countdown:
        _countdown[0] -= 1
        if _countdown[0] <= 0:
            _countdown.clear()
            _flag.set()
    return _flag.is_set()


def requested() -> bool:
    return _flag.is_set()


def reason() -> str:
    return _reason[0] if _reason else "stop requested"


def install_handlers(signals=(signal.SIGTERM, signal.SIGUSR1)) -> dict:
    """Make ``signals`` request a stop (in the main thread only); returns the old handlers."""
    old = {}
    if threading.current_thread() is not threading.main_thread():
        return old

    def handler(signum, frame):
        request_stop(f"received {signal.Signals(signum).name}")

    for sig in signals:
        old[sig] = signal.signal(sig, handler)
    return old


def restore_handlers(old: dict) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)
