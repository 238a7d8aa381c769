"""Spreading independent groups of runs over several devices, one worker process per device.

A *group* is a list of RunConfigs that share a teacher and a data stream (one
``ckd_lib.engine.train`` call). Groups are independent, so with several devices each device takes
the next waiting group as soon as it is free. A worker is ``python -m ckd_lib.train --config
<group>.yaml`` with ``CUDA_VISIBLE_DEVICES`` set to its GPU (or emptied for a "cpu" worker), so
the configs keep ``device="auto"`` and their hashes, and finished runs are recognised whichever
device trained them. The workers' per-epoch lines are relayed, prefixed with the device.
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import yaml

from ckd_lib import results
from ckd_lib.config import RunConfig
from ckd_lib.errors import InputError, RunDivergedError


class WorkerError(RuntimeError):
    """A worker process failed; the message names its group, device and log file."""


def parse_devices(devices) -> list[str]:
    """``"0,1"``, ``[0, 1]``, ``["cuda:0", "cpu"]`` -> ``["0", "1"]`` / ``["0", "cpu"]``.

    An empty value means "no workers": train in this process on its default device.
    """
    if devices is None:
        return []
    if isinstance(devices, str):
        devices = [d for d in (part.strip() for part in devices.split(",")) if d]
    out = []
    for device in devices:
        text = str(device).strip().lower()
        if text.startswith("cuda:"):
            text = text[5:]
        if text != "cpu" and not text.isdigit():
            raise InputError(f"device {device!r} is not accepted; use GPU indices (0, 1, cuda:1) "
                             "or 'cpu'")
        out.append(text)
    return out


def worker_env(device: str, cpu_workers: int = 1) -> dict:
    """The environment of a worker on ``device`` (a GPU index or "cpu")."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        # several CPU workers share the cores; oversubscribed OpenMP threads crawl
        threads = max(1, (os.cpu_count() or 1) // max(cpu_workers, 1))
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


def group_file(group: list[RunConfig], folder: Path) -> Path:
    """Write a group's configs as a YAML list (the format ``ckd_lib.train --config`` reads)."""
    ids = "|".join(c.run_id() for c in group)
    path = folder / f"group-{hashlib.sha256(ids.encode()).hexdigest()[:16]}.yaml"
    results.atomic_write_bytes(path, yaml.safe_dump([c.to_dict() for c in group],
                                                    sort_keys=False).encode())
    return path


def _relay(proc: subprocess.Popen, tag: str, log_path: Path, lines: queue.Queue) -> None:
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            lines.put(f"[{tag}] {line.rstrip()}")
    lines.put(None)


def run_groups_on_devices(groups: list[list[RunConfig]], devices: list[str], work_dir: Path,
                          log: Callable[[str], None] = print, poll_seconds: float = 0.2) -> None:
    """Train ``groups`` with one worker process per entry of ``devices`` at a time.

    Returns when every group has finished; raises :class:`WorkerError` if a worker failed (after
    letting the other running workers finish, so that no work is thrown away). Ctrl-C stops the
    workers (their runs resume from their last epoch next time).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    waiting = list(enumerate(groups))
    running: dict[str, tuple[subprocess.Popen, int, Path]] = {}
    lines: queue.Queue = queue.Queue()
    failures = []
    cpu_workers = sum(1 for d in devices if d == "cpu")
    tags = {}
    for i, device in enumerate(devices):  # "cpu", "cpu" -> "cpu#0", "cpu#1"
        tags[i] = f"gpu{device}" if device != "cpu" else f"cpu#{i}"
    slots = dict(enumerate(devices))
    free = list(slots)
    try:
        while waiting or running:
            while free and waiting and not failures:
                slot = free.pop(0)
                index, group = waiting.pop(0)
                config_path = group_file(group, work_dir)
                log_path = config_path.with_suffix(".log")
                cmd = [sys.executable, "-m", "ckd_lib.train", "--config", str(config_path)]
                proc = subprocess.Popen(cmd, env=worker_env(slots[slot], cpu_workers),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
                names = ", ".join(f"{c.student}/{c.method}" for c in group)
                log(f"[{tags[slot]}] group {index + 1}/{len(groups)}: {group[0].teacher or '-'} "
                    f"-> {names} (log {log_path})")
                threading.Thread(target=_relay, args=(proc, tags[slot], log_path, lines),
                                 daemon=True).start()
                running[tags[slot]] = (proc, slot, log_path)
            if not waiting and failures and not running:
                break
            try:
                line = lines.get(timeout=poll_seconds)
                if line is not None:
                    log(line)
            except queue.Empty:
                pass
            for tag, (proc, slot, log_path) in list(running.items()):
                if proc.poll() is not None:
                    del running[tag]
                    free.append(slot)
                    # 3: a run diverged; its record says so and the study goes on without it
                    if proc.returncode not in (0, RunDivergedError.exit_code):
                        failures.append((tag, proc.returncode, log_path))
            if failures and not running:
                break
        while True:  # drain what the relay threads still hold
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                log(line)
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    if failures:
        details = []
        for tag, code, log_path in failures:
            tail = "".join(Path(log_path).read_text().splitlines(keepends=True)[-15:])
            details.append(f"worker {tag} exited with status {code}; log {log_path}:\n{tail}")
        skipped = f"; {len(waiting)} group(s) not started" if waiting else ""
        raise WorkerError("training failed on a worker" + skipped + "\n" + "\n".join(details))

