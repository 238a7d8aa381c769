"""Atomic writes: whole files or nothing, readable like any other file."""

import os
import pickle
import stat

import pytest

from ckd_lib import results


def test_atomic_json_write_replaces_whole_file_with_plain_permissions(tmp_path):
    path = tmp_path / "sub" / "record.json"
    results.atomic_write_json(path, {"a": 1})
    results.atomic_write_json(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary left


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.pth"
    results.atomic_torch_save({"x": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        results.atomic_torch_save({"f": lambda: 0}, path)  # a lambda cannot be pickled
    import torch

    assert torch.load(path) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_write_record_refuses_incomplete_records(tmp_path):
    with pytest.raises(ValueError, match="lacks required keys"):
        results.write_record(tmp_path, {"run_id": "x"})
