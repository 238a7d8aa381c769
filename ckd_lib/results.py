"""Run records: one JSON file per run, written atomically, that says what ran and what it gave.

A record is the only thing the report reads. It carries the config and its hash, the code version
(commit and dirty flag), the software and hardware, the data and teacher fingerprints, the whole
per-epoch history, and the best and last accuracies, so every number in the report points back to
the run that produced it. A run whose complete record exists with the same config hash, and
whose model file and history agree with it (:func:`record_problems`), is skipped.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import ckd_lib
from ckd_lib.errors import DiskFullError, InputError

RECORD_NAME = "record.json"
MODEL_NAME = "model_last.pth"
# 2: records carry their model file's sha256 ("model") and may say "diverged"
RECORD_VERSION = 2
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
    """Write `data` to `path` so that readers see the old file or the new one, never a part.

    A full disk (ENOSPC, or a quota) is a :class:`DiskFullError` naming the folder and the bytes
    needed, checked before anything is written and caught while writing; the old file stays."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(data) > shutil.disk_usage(path.parent).free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fd, tmp = _temporary_beside(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, len(data)) from None
        raise


def disk_full(path: Path, needed: int | None) -> DiskFullError:
    """The one-line error of a write of ``path`` that found no space: which folder is full, how
    many bytes the write needed (when known) and how many are free."""
    try:
        free = f"{shutil.disk_usage(path.parent).free:,} bytes free"
    except OSError:
        free = "its free space unknown"
    need = f"needs {needed:,} bytes" if needed is not None else "found no space"
    return DiskFullError(f"no space left on the device of {path.parent} (writing {path.name} "
                         f"{need}; {free}): free some space there and run the same command "
                         "again (the file that was there before is kept whole)")


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` as bytes, the same bytes for the same content: saved to a path,
    torch names the zip's inner folder after the file (a temporary name, different every time);
    saved to a buffer, it is always "archive"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through :func:`atomic_write_bytes` (a kill never leaves half a file, a full
    disk is one line): identical content gives a byte-identical file (:func:`torch_bytes`), so
    a model's recorded sha256 confirms a rerun or a resume."""
    atomic_write_bytes(path, torch_bytes(obj))


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


def cpu_model() -> str:
    """The processor's model name ("Intel(R) Xeon(R) Platinum 8480+"), not its architecture:
    /proc/cpuinfo on Linux, else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        info["device_name"] = cpu_model()
        info["device_count"] = 1
    return info


def record_path(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / run_id / RECORD_NAME


def write_record(out_dir: str | Path, record: dict) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks required keys {missing}")
    path = record_path(out_dir, record["run_id"])
    atomic_write_json(path, {k: v for k, v in record.items() if not k.startswith("_")})
    return path


def read_record(path: str | Path) -> dict:
    """A record from its JSON file; an unreadable or foreign file is an InputError."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable run record ({error})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise InputError(f"{path}: not a run record, lacks {missing}")
    wrong = [f"{key} is not a {kind.__name__}" for key, kind in
             (("config", dict), ("history", list), ("provenance", dict))
             if not isinstance(record[key], kind)]
    if wrong:
        raise InputError(f"{path}: not a run record ({', '.join(wrong)})")
    return record


# -- trusting a record ---------------------------------------------------------------------------
_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) within this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def model_entry(path: str | Path) -> dict:
    """What a record says about its model file: name, size and sha256."""
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))


def _summary_problems(record: dict) -> list[str]:
    """Whether best/last follow from the history (classification: epochs; detection: evals)."""
    history = record.get("history") or []
    if not history:
        return ["its history is empty"]
    if record.get("task") == "detection":
        key, metric = "iteration", lambda h: h["bbox"]["AP"]
        value = lambda summary: summary.get("AP")  # noqa: E731
        done, expected = record.get("iterations_done"), record["config"].get("iterations")
    else:
        key, metric = "epoch", lambda h: h["test_top1"]
        value = lambda summary: summary.get("top1")  # noqa: E731
        done, expected = len(history), record["config"].get("epochs")
    problems = []
    if expected is not None and done != expected:
        problems.append(f"it has {done} of {expected} {key}s in its history")
    try:
        best = max(history, key=metric)
        for name, entry in (("best", best), ("last", history[-1])):
            summary = record.get(name) or {}
            if summary.get(key) != entry[key] or not _close(value(summary), metric(entry)):
                problems.append(f"its {name} summary ({key} {summary.get(key)}, "
                                f"{value(summary)}) is not what its history says ({key} "
                                f"{entry[key]}, {metric(entry)})")
    except (KeyError, TypeError, ValueError) as error:
        problems.append(f"its history is malformed ({type(error).__name__}: {error})")
    return problems


def record_problems(record: dict, run_dir: str | Path | None = None) -> list[str]:
    """Why a record that says "complete" cannot be believed: it is of another record version,
    names no model file with its sha256, its history does not support its summary, or its model
    file is missing or is not the file it was written with."""
    if record.get("status") != "complete":
        return []
    problems = []
    if record.get("record_version") != RECORD_VERSION:
        problems.append(f"it is record_version {record.get('record_version')!r}, not "
                        f"{RECORD_VERSION} (this ckd_lib cannot tell what it proves)")
    problems += _summary_problems(record)
    if run_dir is None:
        run_dir = Path(record.get("_path", "")).parent
    model = record.get("model")
    if not isinstance(model, dict) or not model.get("file") or not model.get("sha256"):
        problems.append("it names no model file with its sha256 (no 'model' entry)")
        return problems
    if Path(str(model["file"])).name != model["file"]:
        problems.append(f"its model file {model['file']!r} is not a file of its own folder")
        return problems
    path = Path(run_dir) / model["file"]
    if not path.is_file():
        problems.append(f"its model file {path} is missing")
    elif file_sha256(path) != model["sha256"]:
        problems.append(f"its model file {path} is not the one it was written with (sha256 "
                        "differs)")
    return problems


def _move_aside(path: Path, kind: str) -> Path:
    """``record.<kind>-<time>.json`` beside the record (never deleted)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"record.{kind}-{stamp}.json")
    os.replace(path, aside)
    return aside


def finished_record(out_dir: str | Path, run_id: str, config_hash: str, log=None,
                    identity=None, move_aside: bool = True) -> dict | None:
    """The record of this run if it is finished ("complete", or "diverged") for this config and
    can be believed, else None; what the engine, plan mode and ``--status`` call done.

    A complete record that does not hold up (:func:`record_problems`) is moved aside to
    ``record.rejected-<time>.json``; a complete or diverged record whose inputs differ from what
    this run would use now (``identity.stale_reasons(record)``, a
    :class:`ckd_lib.identity.RunIdentity`) to ``record.stale-<time>.json``. Never deleted;
    ``log`` says why in one line. ``move_aside=False`` (a read-only view) moves nothing."""
    path = record_path(out_dir, run_id)
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except InputError:
        return None
    if record["status"] not in ("complete", "diverged") or record["config_hash"] != config_hash:
        return None
    for kind, reasons, then in (
            ("rejected", record_problems(record, path.parent), "its record says complete but"),
            ("stale", identity.stale_reasons(record) if identity is not None else [], "")):
        if reasons:
            if move_aside:
                aside = _move_aside(path, kind)
                if log is not None:
                    log(f"{run_id}: {then + ' ' if then else ''}{'; '.join(reasons)}: the run "
                        f"is trained again (the old record is kept as {aside})")
            return None
    return record


def completed_record(out_dir: str | Path, run_id: str, config_hash: str, log=None,
                     identity=None, move_aside: bool = True) -> dict | None:
    """The complete record of this run (see :func:`finished_record`), else None."""
    record = finished_record(out_dir, run_id, config_hash, log, identity, move_aside)
    return record if record is not None and record["status"] == "complete" else None


def load_records(out_dir: str | Path = "results/runs", status: str | None = "complete",
                 unreadable: list | None = None) -> list:
    """The records under `out_dir`, sorted by run id: by default the complete ones that can be
    believed; ``status=None``: every record, each with ``_problems`` (why a complete record
    cannot be believed; empty if it can); each carries ``_path``. A ``record.json`` that cannot
    be read or is not a record is skipped; given a list, ``unreadable`` receives
    ``{"path", "why"}`` for each."""
    records = []
    for path in sorted(Path(out_dir).glob(f"*/{RECORD_NAME}")):
        try:
            record = read_record(path)
        except InputError as error:
            if unreadable is not None:
                unreadable.append({"path": str(path), "why": str(error)})
            continue
        if status is None or record["status"] == status:
            record["_path"] = str(path)
            record["_problems"] = record_problems(record, path.parent)
            if status != "complete" or not record["_problems"]:
                records.append(record)
    return records


# -- checkpoints ---------------------------------------------------------------------------------
def load_state(path: str | Path, map_location="cpu", what: str = "checkpoint") -> dict:
    """A checkpoint this project wrote, read with ``weights_only=True``: tensors and plain
    containers only, so a file planted in a shared results folder cannot run code. Any other
    content, or a truncated file, is an InputError naming the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except Exception as error:  # noqa: BLE001 - any failure means the same: not ours, or broken
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it holds Python objects other than tensors and plain containers"
        raise InputError(f"{what} {path} cannot be read: {reason or type(error).__name__}; "
                         "move it away to start that run afresh") from None
    if not isinstance(state, dict):
        raise InputError(f"{what} {path} is not a checkpoint of this project (it holds a "
                         f"{type(state).__name__})")
    return state
