"""Run records: one JSON file per run, written atomically, that says what ran and what it gave.

A record is the only thing the report reads. It carries the config and its hash, the code version
(commit and dirty flag), the software and hardware, the data and teacher fingerprints, the whole
per-epoch history, and the best and last accuracies, so every number in the report points back to
the run that produced it. A run whose complete record exists with the same config hash is skipped.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

import ckd_lib

RECORD_NAME = "record.json"
RECORD_VERSION = 1
REQUIRED_KEYS = ("record_version", "run_id", "status", "config", "config_hash", "history",
                 "best", "last", "provenance")


def _umask_mode() -> int:
    """The mode a plainly created file gets (mkstemp's own 0600 would hide records from others)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_beside(path: Path) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode())
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temporary file and os.replace (a kill never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_state(repo: str | Path | None = None) -> dict:
    """Commit and dirty flag of the checkout ckd_lib runs from (None when not in git)."""
    where = Path(repo) if repo else Path(ckd_lib.__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: torch.device | str | None = None) -> dict:
    """Software versions and the hardware a run used."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    info = {
        "ckd_lib": ckd_lib.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["device_count"] = torch.cuda.device_count()
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["device_count"] = 1
    return info


def record_path(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / run_id / RECORD_NAME


def write_record(out_dir: str | Path, record: dict) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks required keys {missing}")
    path = record_path(out_dir, record["run_id"])
    atomic_write_json(path, record)
    return path


def read_record(path: str | Path) -> dict:
    record = json.loads(Path(path).read_text())
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: not a run record, lacks {missing}")
    return record


def completed_record(out_dir: str | Path, run_id: str, config_hash: str) -> dict | None:
    """The complete record of this run if one exists with the same config hash, else None."""
    path = record_path(out_dir, run_id)
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except (ValueError, json.JSONDecodeError):
        return None
    if record["status"] == "complete" and record["config_hash"] == config_hash:
        return record
    return None


def load_records(out_dir: str | Path = "results/runs", status: str | None = "complete") -> list:
    """Every record under `out_dir` (complete ones by default), sorted by run id."""
    records = []
    for path in sorted(Path(out_dir).glob(f"*/{RECORD_NAME}")):
        try:
            record = read_record(path)
        except (ValueError, json.JSONDecodeError):
            continue
        if status is None or record["status"] == status:
            record["_path"] = str(path)
            records.append(record)
    return records
