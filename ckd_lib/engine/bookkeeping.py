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
  ``HEARTBEAT_SECONDS``) is stale and taken over. So is a damaged one: a file that cannot be a
  lock of a live process (random bytes, a JSON list, a pid that is no process id) at once, and
  one that is empty or cut short (perhaps being written now) once ``STALE_SECONDS`` old; the
  messages say what the file held.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
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
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


# what RunLock writes starts with this; a file that is empty or a prefix of it, or starts with it
# and does not parse, may be a lock that another process is writing at this moment
_LOCK_START = b'{"pid": '


@dataclass(frozen=True)
class LockState:
    """What a lock file holds: ``holder`` (pid, host, since, command) when it is a lock this
    module writes, else ``damaged``, a short description of what is there instead."""

    path: Path
    age: float
    holder: dict | None
    damaged: str | None = None
    partial: bool = False  # empty or cut short: perhaps being written now, so stale only once old

    @property
    def stale(self) -> bool:
        """True when no live process can hold this lock (see the module docstring)."""
        if self.holder is None:
            return self.age > STALE_SECONDS if self.partial else True
        if self.holder["host"] == socket.gethostname():
            return not _pid_alive(self.holder["pid"])
        return self.age > STALE_SECONDS

    def why_stale(self) -> str:
        """Why a stale lock may be taken over, naming what it held."""
        if self.holder is None:
            return f"{self.describe()}, " + ("left unfinished" if self.partial else "not a lock")
        gone = ("that process is gone" if self.holder["host"] == socket.gethostname() else
                f"no heartbeat for {self.age:.0f} s")
        return f"{self.describe()}: {gone}"

    def describe(self) -> str:
        """Who holds the lock, or what the file holds when it is not a lock."""
        if self.holder is None:
            return f"lock file {self.path} holds {self.damaged}, written {self.age:.0f} s ago"
        h = self.holder
        return f"process {h['pid']} on {h['host']} since {h['since']} (lock {self.path})"


def _describe_damage(data: bytes) -> tuple[str, bool]:
    """What a lock file that is not a lock holds, and whether it may be one being written."""
    if not data.strip():
        return ("nothing (an empty file)" if not data else "only white space"), True
    partial = _LOCK_START.startswith(data) or data.startswith(_LOCK_START)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{len(data)} bytes that are not text", partial
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return f"text that is not JSON ({text.strip()[:60]!r})", partial
    if not isinstance(value, dict):
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
            type(value), "number")
        return f"a JSON {kind} ({' '.join(text.split())[:60]}), not an object", False
    pid, host = value.get("pid"), value.get("host")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31):
        return f"pid {json.dumps(pid)}, not a process id", False
    if not isinstance(host, str) or not host:
        return f"host {json.dumps(host)}, not a host name", False
    return "", False  # a lock


class RunLock:
    """Exclusive locks on a set of runs for this process; see the module docstring.

    ``acquire(wait=seconds)`` waits that long for a live holder to finish, then raises
    :class:`RunLockedError` naming it. Used as a context manager it releases on exit. A lock
    file that is not a lock (random bytes, a JSON list, a pid that is not a number) cannot belong
    to a live process and is taken over at once, saying what it held; one that is empty or cut
    short may be one being written now, and is taken over once ``STALE_SECONDS`` old.
    """

    def __init__(self, paths: list[Path], log=print):
        self.paths = sorted(Path(p) for p in paths)
        self.held: list[Path] = []
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def inspect(path: Path) -> LockState | None:
        """The state of the lock file at ``path``; None when there is none."""
        path = Path(path)
        try:
            age = time.time() - path.stat().st_mtime
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise InputError(f"lock file {path} cannot be read ({error.strerror or error}); "
                             "remove it if no process is training that run") from None
        what, partial = _describe_damage(data)
        if what:
            return LockState(path, age, None, what, partial)
        holder = json.loads(data)
        since = holder.get("since")
        if not isinstance(since, str):
            since = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                timespec="seconds")
        return LockState(path, age, {**holder, "since": since})

    @staticmethod
    def holder(path: Path) -> dict | None:
        """The holder of a lock this module wrote (pid, host, since, command), else None."""
        try:
            state = RunLock.inspect(path)
        except InputError:
            return None
        return state.holder if state else None

    @staticmethod
    def is_stale(path: Path) -> bool:
        """True when no live process holds the lock at ``path`` (or there is none)."""
        state = RunLock.inspect(path)
        return state is None or state.stale

    def _content(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now(),
                           "command": " ".join(sys.argv)[:500]}).encode()

    def _try(self, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            state = self.inspect(path)
            if state is not None and not state.stale:
                return False
            results.atomic_write_bytes(path, self._content())  # take the stale lock over
            time.sleep(0.05)
            mine = self.holder(path)  # two takers: the last writer wins, the other backs off
            if not (mine and mine["pid"] == os.getpid()
                    and mine["host"] == socket.gethostname()):
                return False
            if state is not None:
                self.log(f"took over the lock of run {path.stem}: {state.why_stale()}")
            return True
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._content())
        return True

    def acquire(self, wait: float = 0.0) -> RunLock:
        deadline = time.monotonic() + wait
        for path in self.paths:
            while not self._try(path):
                if time.monotonic() >= deadline:
                    self.release()
                    raise RunLockedError(self._refusal(path))
                time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            self.held.append(path)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return self

    @classmethod
    def _refusal(cls, path: Path) -> str:
        state = cls.inspect(path)
        if state is None or state.holder is not None:
            who = state.describe() if state else f"another process (lock {path})"
            return (f"run {path.stem} is being trained by {who}; wait for it to finish (the "
                    "same command then skips the run), or delete the lock file if that process "
                    "is gone")
        return (f"run {path.stem} may be starting in another process: {state.describe()} "
                f"(perhaps a lock being written); it is taken over once {STALE_SECONDS:.0f} s "
                "old, or delete it if no process is training this run")

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
