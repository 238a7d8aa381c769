"""The files of a run, shared by the classification and the detection trainers.

Why one layer: skipping a finished run, resuming an interrupted one, refusing a second process
that would train the same run, recording a divergence, and writing the model with its checksum
must behave identically for every kind of run. Per run, under the run's ``out_dir``:

- ``<run_id>/record.json`` and ``<run_id>/model_last.pth``: the result; the record carries the
  model's sha256 and is only believed when the file agrees (``ckd_lib.results``);
- ``_checkpoints/<run_id>.pt``: the state to resume from (tensors and plain containers only,
  read with ``weights_only=True``), written atomically;
- ``_locks/<run_id>.lock``: which process trains the run now. A lock whose process is gone
  (same host, no such pid) or whose heartbeat stopped (another host; refreshed every
  ``HEARTBEAT_SECONDS``) is stale and taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ckd_lib import results
from ckd_lib.errors import InputError, RunLockedError

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive locks on a set of runs for this process; see the module docstring.

    ``acquire(wait=seconds)`` waits that long for a live holder to finish, then raises
    :class:`RunLockedError` naming it. Used as a context manager it releases on exit.
    """

    def __init__(self, paths: list[Path]):
        self.paths = sorted(Path(p) for p in paths)
        self.held: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def holder(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def is_stale(path: Path, holder: dict | None) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:  # being written, or garbage: stale only once old
            return age > STALE_SECONDS
        if holder.get("host") == socket.gethostname():
            return not _pid_alive(int(holder.get("pid", -1)))
        return age > STALE_SECONDS

    def _content(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now(),
                           "command": " ".join(sys.argv)[:500]}).encode()

    def _try(self, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = self.holder(path)
            if not self.is_stale(path, holder):
                return False
            results.atomic_write_bytes(path, self._content())  # take the stale lock over
            time.sleep(0.05)
            mine = self.holder(path)  # two takers: the last writer wins, the other backs off
            return bool(mine) and mine.get("pid") == os.getpid() and \
                mine.get("host") == socket.gethostname()
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._content())
        return True

    def acquire(self, wait: float = 0.0) -> RunLock:
        deadline = time.monotonic() + wait
        for path in self.paths:
            while not self._try(path):
                if time.monotonic() >= deadline:
                    holder = self.holder(path) or {}
                    self.release()
                    raise RunLockedError(
                        f"run {path.stem} is being trained by process {holder.get('pid', '?')} "
                        f"on {holder.get('host', '?')} since {holder.get('since', '?')} (lock "
                        f"{path}); wait for it to finish (the same command then skips the run), "
                        "or delete the lock file if that process is gone")
                time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            self.held.append(path)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            for path in self.held:
                try:
                    os.utime(path)
                except OSError:
                    pass

    def release(self) -> None:
        self._stop.set()
        for path in self.held:
            holder = self.holder(path)
            if holder and holder.get("pid") == os.getpid():
                path.unlink(missing_ok=True)
        self.held = []

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunBook:
    """The files of one run; see the module docstring. ``identity``
    (:class:`ckd_lib.identity.RunIdentity`): the inputs the run would be computed from now; a
    record computed from other ones is stale (:meth:`for_config` makes both)."""

    def __init__(self, out_dir: str | Path, run_id: str, config_hash: str, identity=None):
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.config_hash = config_hash
        self.identity = identity

    @classmethod
    def for_config(cls, config) -> RunBook:
        """The book of a RunConfig or DetectionConfig, with the inputs it would use now."""
        from ckd_lib import identity

        return cls(config.out_dir, config.run_id(), config.config_hash(),
                   identity.of_config(config))

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.run_id

    @property
    def record_path(self) -> Path:
        return results.record_path(self.out_dir, self.run_id)

    @property
    def model_path(self) -> Path:
        return self.run_dir / results.MODEL_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "_checkpoints" / f"{self.run_id}.pt"

    @property
    def lock_path(self) -> Path:
        return self.out_dir / "_locks" / f"{self.run_id}.lock"

    # -- what exists --------------------------------------------------------------------------
    def finished(self, log=print, move_aside: bool = True) -> dict | None:
        """The run's record if there is nothing to train: complete (its files agree with it) or
        diverged, for this config and these inputs (``ckd_lib.results.finished_record``: a
        record that does not hold up, or is stale, is moved aside, said in one line)."""
        return results.finished_record(self.out_dir, self.run_id, self.config_hash, log,
                                       self.identity, move_aside)

    def completed(self, log=print) -> dict | None:
        """The complete record, if it exists for this config and its files agree with it."""
        record = self.finished(log)
        return record if record is not None and record["status"] == "complete" else None

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        results.atomic_torch_save({**state, "run_id": self.run_id,
                                   "config_hash": self.config_hash}, self.checkpoint_path)

    def load_checkpoint(self, map_location="cpu") -> dict | None:
        """The saved state of this run, or None; a checkpoint of another config is refused."""
        if not self.checkpoint_path.is_file():
            return None
        state = results.load_state(self.checkpoint_path, map_location, "resume checkpoint")
        if state.get("config_hash") != self.config_hash:
            raise InputError(f"resume checkpoint {self.checkpoint_path} belongs to another "
                             "config of this run id; move it away to start the run afresh")
        return state

    def drop_checkpoint(self) -> None:
        self.checkpoint_path.unlink(missing_ok=True)

    # -- records ------------------------------------------------------------------------------
    def write_record(self, record: dict) -> None:
        results.write_record(self.out_dir, record)

    def finish(self, record: dict, model_state: dict) -> dict:
        """Write the model, then the complete record with the model's checksum, then drop the
        checkpoint: a kill between two steps leaves a run that resumes or is complete."""
        results.atomic_torch_save(model_state, self.model_path)
        record = {**record, "status": "complete", "model": results.model_entry(self.model_path)}
        self.write_record(record)
        self.drop_checkpoint()
        return record

    def mark_diverged(self, record: dict, divergence: dict) -> dict:
        record = {**record, "status": "diverged", "diverged": divergence}
        self.write_record(record)
        self.drop_checkpoint()
        return record


def divergence_message(record: dict) -> str:
    d = record.get("diverged") or {}
    where = f"epoch {d.get('epoch')}" if "epoch" in d else f"iteration {d.get('iteration')}"
    return (f"run {record['run_id']} diverged at {where}: {d.get('what', 'a non-finite value')} "
            f"(lr {d.get('lr')}); its record says diverged ({d.get('record', 'record.json')}). "
            "Lower the lr (or change the config) to train it; delete the record to retry as is")


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse an out_dir that cannot hold records, before any data is loaded."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"out_dir={str(out_dir)!r} cannot hold run records "
                         f"({error.strerror or error}); choose a writable folder") from None
