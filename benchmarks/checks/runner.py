"""Runs one section in a child process under a time budget, and reads back what it recorded.

Why a process per section: a section that hangs (a stuck DataLoader worker, a deadlocked
capture) is killed with its whole process group when its budget is spent, and a CUDA error that
poisons a context (a failed graph capture can) stays in that process. Whatever the section
recorded before the end is kept; the end itself (finished, error, killed by the time guard)
becomes the section's status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "device_check.py"
LOG_TAIL_LINES = 12


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_section(name: str, budget_s: float, work: Path, dry_run: bool,
                extra_args: list[str], script: Path = SCRIPT) -> dict:
    """The section's record (rows, figures, notes) plus ``status``, ``seconds`` and, when it did
    not finish, ``error`` (with the tail of its log). ``script`` is run with ``--section``."""
    section_dir = work / name
    section_dir.mkdir(parents=True, exist_ok=True)
    result_path, log_path = section_dir / "result.json", section_dir / "log.txt"
    margin = max(3.0, 0.1 * budget_s)  # the section stops starting things this much earlier
    command = [sys.executable, str(script), "--section", name, "--result", str(result_path),
               "--work", str(section_dir), "--deadline-s", f"{budget_s - margin:.1f}",
               *(["--dry-run"] if dry_run else []), *extra_args]
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: kill workers too
        try:
            process.wait(timeout=budget_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(process)
            timed_out = True
    seconds = time.monotonic() - started
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"section": name, "rows": [], "figures": {}, "notes": []}
    result["seconds"] = seconds
    result["log"] = str(log_path)
    if timed_out:
        result["status"] = "timeout"
        result["error"] = f"killed by the time guard after {budget_s:.0f} s\n{_tail(log_path)}"
    elif process.returncode != 0 or result.get("status") != "ok":
        result["status"] = "error"
        result.setdefault("error", f"exit code {process.returncode}\n{_tail(log_path)}")
    return result
