"""Damaged lock files, through the training command line and RunLock itself.

A lock file can be left damaged (a crash mid-write, a disk error, a person editing it); it must
never cause a traceback. One that cannot be a lock of a live process is taken over at once, the
log saying what it held; one that may be a lock being written (empty, cut short) only once old.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import yaml
from test_bad_input import refused, run, tiny_config

from ckd_lib.config import RunConfig
from ckd_lib.engine.bookkeeping import STALE_SECONDS, RunLock
from ckd_lib.errors import InputError, RunLockedError

# lock file content -> what the take-over line says it held
DAMAGED = {
    "random bytes": (bytes(range(128, 192)), "64 bytes that are not text"),
    "a JSON list": (b'[1234, "host"]', "a JSON list ([1234, \"host\"]), not an object"),
    "a non-integer pid": (json.dumps({"pid": "abc", "host": socket.gethostname()}).encode(),
                          'pid "abc", not a process id'),
    "plain text": (b"locked by alice\n", "text that is not JSON ('locked by alice')"),
    "an old empty file": (b"", "nothing (an empty file)"),
}


def group_config(tmp_path, count):
    """One YAML file with ``count`` runs trained together (one command, one lock each)."""
    path = tiny_config(tmp_path)
    base = yaml.safe_load(path.read_text())
    items = [{**base, "lr": 0.01 * (i + 1)} for i in range(count)]
    path.write_text(yaml.safe_dump(items))
    return path, [c.run_id() for c in RunConfig.from_yaml(path)]


def test_damaged_locks_are_taken_over_saying_what_they_held(tmp_path):
    config, run_ids = group_config(tmp_path, len(DAMAGED))
    locks = tmp_path / "runs" / "_locks"
    locks.mkdir(parents=True)
    for run_id, (content, _) in zip(run_ids, DAMAGED.values(), strict=True):
        (locks / f"{run_id}.lock").write_bytes(content)
    old = time.time() - STALE_SECONDS - 10
    os.utime(locks / f"{run_ids[-1]}.lock", (old, old))  # the empty one: stale once old
    proc = run("ckd_lib.train", "--config", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    for run_id, (_, said) in zip(run_ids, DAMAGED.values(), strict=True):
        line = next(x for x in proc.stdout.splitlines() if f"lock of run {run_id}" in x)
        assert said in line and "?" not in line.replace("'", ""), line
        assert json.loads((tmp_path / "runs" / run_id / "record.json").read_text())[
            "status"] == "complete"
    assert not list(locks.iterdir())  # released after training


def test_a_lock_perhaps_being_written_is_refused_until_old_naming_what_it_holds(tmp_path):
    config, (run_id,) = group_config(tmp_path, 1)
    lock = tmp_path / "runs" / "_locks" / f"{run_id}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(b'{"pid": 12')  # cut short: the start of what RunLock writes
    line = refused(run("ckd_lib.train", "--config", config), run_id, "'{\"pid\": 12'",
                   f"taken over once {STALE_SECONDS:.0f} s old", code=75)
    assert "?" not in line.replace("'", "")
    assert lock.read_bytes() == b'{"pid": 12' and not (tmp_path / "runs" / run_id).exists()


def test_a_lock_that_is_a_folder_is_one_line(tmp_path):
    config, (run_id,) = group_config(tmp_path, 1)
    (tmp_path / "runs" / "_locks" / f"{run_id}.lock").mkdir(parents=True)
    refused(run("ckd_lib.train", "--config", config), f"{run_id}.lock cannot be read",
            "remove it")


@pytest.mark.parametrize("content, stale", [
    (b"", False), (b"  \n", False), (b'{"pi', False), (b'{"pid": 4', False),  # being written?
    (b"\xff\xfe\x00", True), (b"[]", True), (b"null", True), (b"3", True), (b'"x"', True),
    (b'{"pid": 0, "host": "h"}', True), (b'{"pid": -1, "host": "h"}', True),
    (b'{"pid": 99999999999999999999, "host": "h"}', True), (b'{"pid": true, "host": "h"}', True),
    (b'{"pid": 1.5, "host": "h"}', True), (b'{"pid": 7, "host": 3}', True), (b'{"pid": 7}', True),
])
def test_what_a_damaged_lock_holds_decides_when_it_is_stale(tmp_path, content, stale):
    path = tmp_path / "x.lock"
    path.write_bytes(content)
    state = RunLock.inspect(path)
    assert state.holder is None and state.damaged and state.stale is stale
    assert "?" not in state.describe().replace("'", "")
    old = time.time() - STALE_SECONDS - 1
    os.utime(path, (old, old))
    assert RunLock.inspect(path).stale  # every damaged lock is stale once old


def test_a_live_lock_is_held_and_one_without_since_says_when_it_was_written(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    state = RunLock.inspect(path)
    assert state.holder["pid"] == os.getpid() and not state.stale
    with pytest.raises(RunLockedError, match=rf"process {os.getpid()} on .* since 20\d\d-"):
        RunLock([path]).acquire()
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "since": "then"}))
    assert not RunLock.is_stale(path)  # another host: only a stopped heartbeat makes it stale
    old = time.time() - STALE_SECONDS - 1
    os.utime(path, (old, old))
    assert RunLock.is_stale(path)
    taken = []
    RunLock([path], log=taken.append).acquire().release()
    assert "no heartbeat for" in taken[0] and "another-host" in taken[0]
    assert not path.exists()  # released
    path.mkdir()
    with pytest.raises(InputError, match="cannot be read"):  # one line, not a traceback
        RunLock.inspect(path)
