"""A run's identity, records believed only with proof, byte-identical files, a full disk, and
what a plugin method keeps.

Each behaviour is exercised where a user meets it: the training command line (a subprocess,
exit status, one line, no traceback) for stale runs and a full disk, the engine in-process
where only files are compared. Independent truth: sha256 of the files on disk, the plugin and
teacher files' own sha256, the checkpoint's epoch as torch reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from ckd_lib.config import RunConfig
from ckd_lib.engine import stop, train
from ckd_lib.engine.bookkeeping import RunBook
from ckd_lib.methods import load_plugin
from ckd_lib.models import create_model, load_teacher, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
FITNET = REPO / "docs" / "examples" / "fitnet_method.py"
DATA = "synthetic:num_classes=5,num_train=64,num_test=32"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def command(*args, wrapper: Path | None = None, timeout=600) -> subprocess.CompletedProcess:
    # this process's thread count: a run in it and one in the subprocess compute alike
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONUNBUFFERED": "1"}
    env.pop("CKD_PLUGINS", None)
    head = [sys.executable, str(wrapper)] if wrapper else [sys.executable, "-m"]
    return subprocess.run([*head, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def config_dict(folder: Path, **changes) -> dict:
    config = dict(student="resnet8", method="KD", dataset=DATA, teacher="resnet8",
                  teacher_checkpoint="untrained", epochs=1, lr=0.05, schedule="cosine",
                  batch_size=16, device="cpu", out_dir=str(folder / "runs"), progress=False)
    config.update(changes)
    return config


def config_file(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config_dict(folder, **changes)))
    return path


def one_line(text: str, fragment: str) -> str:
    lines = [line for line in text.splitlines() if fragment in line]
    assert len(lines) == 1, text
    return lines[0]


# -- 1. what a run's identity covers ---------------------------------------------------------------
def test_an_edited_plugin_or_a_replaced_teacher_makes_the_run_train_again(tmp_path):
    plugin = tmp_path / "fitnet_method.py"
    shutil.copy(FITNET, plugin)
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(1)
    save_checkpoint(create_model("resnet8", num_classes=5), teacher)
    path = config_file(tmp_path, method="FitNet", teacher_checkpoint=str(teacher))
    load_plugin(str(plugin))  # to name the run here (its id hashes the method's parameters)
    config = RunConfig.from_dict(yaml.safe_load(path.read_text()))
    run_dir = Path(config.out_dir) / config.run_id()

    def train_cli():
        proc = command("ckd_lib.train", "--plugin", plugin, "--config", path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    assert "epoch 1/1" in train_cli()
    assert "epoch 1/1" not in train_cli()  # unchanged inputs: done, not trained again
    old_plugin = sha(plugin)
    plugin.write_text(plugin.read_text() + "\n# the hint is unchanged, the file is not\n")
    out = train_cli()
    line = one_line(out, "changed since this run")
    assert f"plugin fitnet_method.py changed since this run (sha256 {old_plugin[:8]}.. -> " \
           f"{sha(plugin)[:8]}..)" in line and "trained again" in line, line
    assert "epoch 1/1" in out
    (stale,) = run_dir.glob("record.stale-*.json")
    assert json.loads(stale.read_text())["provenance"]["plugins"][0]["sha256"] == old_plugin
    record = json.loads((run_dir / "record.json").read_text())
    assert record["provenance"]["plugins"][0]["sha256"] == sha(plugin)

    old_teacher = sha(teacher)
    torch.manual_seed(2)  # other weights at the same path
    save_checkpoint(create_model("resnet8", num_classes=5), teacher)
    out = train_cli()
    line = one_line(out, "changed since this run")
    assert f"teacher checkpoint {teacher} changed since this run (sha256 {old_teacher[:8]}.. " \
           f"-> {sha(teacher)[:8]}..)" in line, line
    assert "epoch 1/1" in out
    assert json.loads((run_dir / "record.json").read_text())["teacher"]["sha256"] == sha(teacher)
    assert len(list(run_dir.glob("record.stale-*.json"))) == 2


def test_status_and_plan_mode_agree_with_the_engine_on_a_stale_run(tmp_path):
    from ckd_lib.study import slurm, status
    from ckd_lib.study.planning import Plan, Unit

    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(1)
    save_checkpoint(create_model("resnet8", num_classes=5), teacher)
    config = RunConfig.from_dict(config_dict(tmp_path, teacher_checkpoint=str(teacher)))
    train(config)
    run = {"run_id": config.run_id(), "config_hash": config.config_hash(),
           "out_dir": config.out_dir, "teacher_checkpoint": str(teacher)}
    plan = Plan("p", [Unit("20_same_arch", "classification", [config.to_dict()], [run])])
    assert slurm.run_statuses(plan) == {config.run_id(): "complete"}
    torch.manual_seed(2)
    save_checkpoint(create_model("resnet8", num_classes=5), teacher)
    assert slurm.run_statuses(plan) == {config.run_id(): "stale"}
    states = {plan.units[0].key: slurm.UnitState("missing")}
    lines = status.run_lines(plan, states, slurm.run_statuses(plan))
    assert lines["20_same_arch"][0][0] == "stale"
    assert (Path(config.out_dir) / config.run_id() / "record.json").is_file()  # moved nothing
    said = []
    assert RunBook.for_config(config).finished(said.append) is None  # the engine's own test
    assert "teacher checkpoint" in said[0] and "trained again" in said[0]


# -- 2. records believed only with proof -----------------------------------------------------------
@pytest.mark.parametrize("damage, reason", [
    (lambda r: r.pop("model"), "names no model file with its sha256"),
    (lambda r: r.update(record_version=1), "record_version 1, not 2"),
    (lambda r: r.update(record_version=99), "record_version 99, not 2"),
], ids=["no_model_entry", "version_1", "version_99"])
def test_a_record_without_proof_is_not_believed(tmp_path, damage, reason):
    config = RunConfig.from_dict(config_dict(tmp_path))
    (record,) = train(config)
    path = Path(config.out_dir) / config.run_id() / "record.json"
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    said = []
    assert RunBook.for_config(config).finished(said.append) is None
    assert reason in said[0] and "trained again" in said[0], said
    assert list(path.parent.glob("record.rejected-*.json")) and not path.exists()
    (again,) = train(config)  # and the engine trains it again, to the same bytes
    assert again["status"] == "complete" and again["model"]["sha256"] == record["model"]["sha256"]


def test_unreadable_records_are_listed_as_left_out_and_not_counted(tmp_path):
    from ckd_lib.report.collect import load_study

    runs = tmp_path / "results" / "p" / "runs"
    good = RunConfig.from_dict(config_dict(tmp_path, out_dir=str(runs)))
    train(good)
    text = (runs / good.run_id() / "record.json").read_text()
    wrong = {**json.loads(text), "config": ["resnet8"]}
    for name, content in (("truncated", text[: len(text) // 2]), ("a_list", "[1, 2]"),
                          ("binary", "\x00\xff garbage"), ("wrong_types", json.dumps(wrong))):
        (runs / name).mkdir()
        (runs / name / "record.json").write_text(content)
    newer = json.loads(text)
    newer["record_version"] = 99
    (runs / "newer").mkdir()
    (runs / "newer" / "record.json").write_text(json.dumps(newer))
    shutil.copy(runs / good.run_id() / "model_last.pth", runs / "newer")
    study = load_study("p", tmp_path / "results")
    assert [r["run_id"] for r in study.records] == [good.run_id()] and len(study.frame) == 1
    why = {e["link"].split("/")[1]: e["why"] for e in study.excluded}
    assert set(why) == {"truncated", "a_list", "binary", "wrong_types", "newer"}, why
    assert "unreadable" in why["truncated"] and "not a readable run record" in why["truncated"]
    assert "not a run record" in why["a_list"]
    assert "not a run record (config is not a dict)" in why["wrong_types"]
    assert "record_version 99" in why["newer"]


def test_the_report_says_which_cells_each_commit_made(tmp_path):
    from ckd_lib.report.collect import load_study
    from ckd_lib.report.provenance import collect_provenance

    runs = tmp_path / "results" / "p" / "runs"
    kd = RunConfig.from_dict(config_dict(tmp_path, out_dir=str(runs)))
    ce = RunConfig.from_dict(config_dict(tmp_path, out_dir=str(runs), method="CE", teacher=None,
                                         teacher_checkpoint=None, student="resnet14"))
    train(kd), train(ce)
    path = runs / ce.run_id() / "record.json"
    record = json.loads(path.read_text())
    record["provenance"].update(commit="0123456789abcdef", dirty=False)  # an older checkout's
    path.write_text(json.dumps(record))
    commits = collect_provenance(load_study("p", tmp_path / "results")).commits
    assert len(commits) == 2
    cells = {row["commit"]: row["cells"] for row in commits}
    assert cells["0123456789abcdef"] == "main: resnet14 CE"
    (other,) = [c for c in cells if c != "0123456789abcdef"]
    assert cells[other] == "main: resnet8→resnet8 KD"


# -- 3. byte-identical files, 6. what a plugin method keeps ------------------------------------
def test_identical_and_resumed_runs_write_byte_identical_files_that_keep_the_terms(
        tmp_path, monkeypatch):
    load_plugin(str(FITNET))
    configs = {name: RunConfig.from_dict(config_dict(tmp_path / name, method="FitNet",
                                                     epochs=2))
               for name in ("first", "second", "resumed")}
    with monkeypatch.context() as patch:  # keep the first run's last checkpoint to compare
        patch.setattr(RunBook, "drop_checkpoint", lambda self: None)
        train(configs["first"])
    train(configs["second"])
    stop.request_stop_after(6)  # 4 steps an epoch: inside the second epoch
    with pytest.raises(stop.RunInterrupted):
        train(configs["resumed"])
    train(configs["resumed"])
    files = {name: Path(c.out_dir) / c.run_id() / "model_last.pth" for name, c in configs.items()}
    assert sha(files["first"]) == sha(files["second"]) == sha(files["resumed"])
    record = json.loads((files["first"].parent / "record.json").read_text())
    assert record["model"]["sha256"] == sha(files["first"])
    saved = torch.load(files["first"], weights_only=True)
    first = configs["first"]
    last = torch.load(Path(first.out_dir) / "_checkpoints" / f"{first.run_id()}.pt",
                      weights_only=True)  # the trainer's own state after the last epoch
    assert last["epoch"] == 2 and set(last["objective"]) == {"parts.fitnet.connector.weight"}
    kept = saved["objective"]["fitnet"]["connector.weight"]
    assert torch.equal(kept, last["objective"]["parts.fitnet.connector.weight"])
    torch.manual_seed(0)  # the student's, then the connector's initial draw, as the engine's
    create_model("resnet8", num_classes=5)
    assert not torch.equal(kept, torch.nn.Conv2d(64, 64, 1, bias=False).weight)  # trained
    model, info = load_teacher("resnet8", files["first"], num_classes=5)  # ignores "objective"
    assert info["sha256"] == sha(files["first"])
    assert "connector_norm" in record["history"][-1]


# -- 4. a full disk ------------------------------------------------------------------------------
FULL_DISK = textwrap.dedent('''\
    """Runs a ckd_lib command line with the disk "full" for the writes whose temporary file's
    path holds MATCH, from the FAIL_AT-th such write on: os.fdopen hands back a file whose
    write raises ENOSPC, as a full filesystem does."""
    import errno, os, runpy, sys

    MATCH, FAIL_AT = os.environ["FULL_MATCH"], int(os.environ["FULL_AT"])
    real, seen = os.fdopen, [0]

    class Full:
        def __init__(self, handle):
            self.handle = handle
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.handle.close()
        def __getattr__(self, name):
            return getattr(self.handle, name)

    def fdopen(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)
        if MATCH in os.readlink(f"/proc/self/fd/{fd}"):
            seen[0] += 1
            if seen[0] >= FAIL_AT:
                return Full(handle)
        return handle

    os.fdopen = fdopen
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    ''')


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    wrapper = tmp_path / "full_disk.py"
    wrapper.write_text(FULL_DISK)
    path = config_file(tmp_path, epochs=3)
    config = RunConfig.from_dict(yaml.safe_load(path.read_text()))
    checkpoints = Path(config.out_dir) / "_checkpoints"
    os.environ.update(FULL_MATCH="/_checkpoints/.", FULL_AT="2")  # the second epoch's write
    try:
        proc = command("ckd_lib.train", "--config", path, wrapper=wrapper)
    finally:
        os.environ.pop("FULL_MATCH"), os.environ.pop("FULL_AT")
    assert proc.returncode == 74 and "Traceback" not in proc.stderr, proc.stderr
    line = one_line(proc.stderr, "error:")
    assert f"no space left on the device of {checkpoints} (writing {config.run_id()}.pt " \
           "needs " in line and " bytes" in line, line
    assert [p.name for p in checkpoints.iterdir()] == [f"{config.run_id()}.pt"]  # no temporary
    kept = torch.load(checkpoints / f"{config.run_id()}.pt", weights_only=True)
    assert kept["epoch"] == 1 and kept["batch"] == 0
    resumed = command("ckd_lib.train", "--config", path)
    assert resumed.returncode == 0 and "resumed 1 run(s) at epoch 2" in resumed.stdout
    straight = RunConfig.from_dict(config_dict(tmp_path / "straight", epochs=3))
    train(straight)
    assert sha(Path(straight.out_dir) / straight.run_id() / "model_last.pth") == \
        sha(Path(config.out_dir) / config.run_id() / "model_last.pth")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_a_full_disk_under_the_study_runner_is_one_line(tmp_path):
    wrapper = tmp_path / "full_disk.py"
    wrapper.write_text(FULL_DISK)
    os.environ.update(FULL_MATCH="/executed/.", FULL_AT="1")
    try:
        proc = command("ckd_lib.study", "--profile", "tiny", "--results-dir", tmp_path / "r",
                       "--only", "00_environment", wrapper=wrapper, timeout=300)
    finally:
        os.environ.pop("FULL_MATCH"), os.environ.pop("FULL_AT")
    assert proc.returncode == 74 and "Traceback" not in proc.stderr, proc.stderr
    line = one_line(proc.stderr, "error:")
    assert f"no space left on the device of {tmp_path / 'r' / 'tiny' / 'executed'}" in line
    assert "needs " in line, line
