"""The audit (``python -m ckd_lib.study --verify``, ``--export``, ``--verify --bundle``) through
its command line, on a copy of the tiny study the suite executes once (``tiny_study``).

It must pass on the fresh study and on its bundle, and fail, one line per tampered run and a
non-zero exit, on a swapped model, an edited record (its history and summary changed alike, so
only evaluating the model again can tell), a truncated record and a changed plugin; a bundle
that does not match its manifest, or would write outside its folder, is refused before anything
is extracted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ckd_lib.config import RunConfig
from ckd_lib.engine import train
from ckd_lib.methods import load_plugin
from ckd_lib.study import audit
from ckd_lib.study.__main__ import main as study_main

# one worker builds the session's tiny study for every module of this group (conftest)
pytestmark = pytest.mark.xdist_group("tiny_study")

REPO = Path(__file__).resolve().parents[1]
FITNET = REPO / "docs" / "examples" / "fitnet_method.py"


def study(*args, timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("CKD_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "ckd_lib.study", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def mismatches(proc) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("mismatch: ")]


@pytest.fixture
def results(tiny_study, tmp_path) -> Path:
    """A copy of the executed tiny study's results (tests tamper with it)."""
    assert tiny_study.code == 0, tiny_study.lines
    copy = tmp_path / "results"
    shutil.copytree(tiny_study.results_dir / "tiny", copy / "tiny")
    return copy


def students(results: Path) -> list[Path]:
    """Run folders of distillation runs nobody distils from (no teacher of another run)."""
    runs = sorted((results / "tiny" / "runs").glob("*/record.json"))
    records = [json.loads(p.read_text()) for p in runs]
    teachers = {Path(r["config"].get("teacher_checkpoint") or "").parent.name for r in records}
    return [p.parent for p, r in zip(runs, records, strict=True)
            if r["config"]["method"] != "CE" and p.parent.name not in teachers]


def test_verify_passes_on_the_fresh_study_and_its_bundle(results, tmp_path):
    proc = study("--profile", "tiny", "--results-dir", results, "--verify")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert not mismatches(proc), proc.stdout
    records = len(list((results / "tiny" / "runs").glob("*/record.json")))
    last = proc.stdout.strip().splitlines()[-1]
    assert f": OK: {records} record(s), {records} model(s) evaluated again" in last, last
    assert "0 mismatch(es)" in last

    bundle = tmp_path / "tiny.tar.gz"
    proc = study("--profile", "tiny", "--results-dir", results, "--export", bundle)
    assert proc.returncode == 0 and bundle.is_file(), proc.stdout + proc.stderr
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    for part in ("tiny/summary.csv", "tiny/report.html", "tiny/executed/90_report.ipynb"):
        assert part in names
    assert sum(n.endswith("/model_last.pth") for n in names) == records
    assert not any("_checkpoints" in n or "_locks" in n for n in names)
    shutil.rmtree(results)  # checked where nothing of the original is left
    proc = study("--verify", "--bundle", bundle)
    assert proc.returncode == 0 and not mismatches(proc), proc.stdout + proc.stderr
    assert f"verify bundle {bundle}: OK: {records} record(s)" in proc.stdout


def test_verify_names_each_tampered_run_in_one_line(results, tmp_path):
    plugin = tmp_path / "fitnet_method.py"
    shutil.copy(FITNET, plugin)
    load_plugin(str(plugin))
    runs = results / "tiny" / "runs"
    config = RunConfig.from_dict(dict(
        student="resnet8", method="FitNet", teacher="resnet8", teacher_checkpoint="untrained",
        dataset="synthetic:num_classes=10,num_train=256,num_test=128", epochs=1, lr=0.05,
        schedule="cosine", batch_size=64, device="cpu", out_dir=str(runs), progress=False))
    train(config)
    from ckd_lib.report.build import prepare

    prepare("tiny", results).write_summary()  # the plugin run is part of the published tables
    ok = study("--profile", "tiny", "--results-dir", results, "--verify", "--plugin", plugin)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    swapped, edited, truncated = students(results)[:3]
    student = json.loads((swapped / "record.json").read_text())["config"]["student"]
    # another architecture's weights (wrn_16_1 for resnet8): they do not even load
    donor = next(p for p in students(results)
                 if json.loads((p / "record.json").read_text())["config"]["student"] != student)
    shutil.copy(donor / "model_last.pth", swapped / "model_last.pth")
    record = json.loads((edited / "record.json").read_text())
    for entry in record["history"]:
        entry["test_top1"] += 30.0
    record["best"]["top1"] += 30.0
    record["last"]["top1"] += 30.0
    (edited / "record.json").write_text(json.dumps(record))
    text = (truncated / "record.json").read_text()
    (truncated / "record.json").write_text(text[: len(text) // 2])
    plugin.write_text(plugin.read_text() + "\n# edited after the run\n")

    proc = study("--profile", "tiny", "--results-dir", results, "--verify", "--plugin", plugin)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    runs_named = [line for line in mismatches(proc) if line.startswith("mismatch: run ")]
    by_run = {name: [line for line in runs_named if f"run {name}:" in line]
              for name in (swapped.name, edited.name, truncated.name, config.run_id())}
    assert all(len(lines) == 1 for lines in by_run.values()), runs_named
    assert len(runs_named) == 4, runs_named
    assert "is not the one it was written with (sha256 differs)" in by_run[swapped.name][0]
    assert f"its model file does not hold {student} weights" in by_run[swapped.name][0]
    assert "its model gives top-1" in by_run[edited.name][0]
    assert "not a readable run record" in by_run[truncated.name][0]
    assert "plugin fitnet_method.py changed since this run" in by_run[config.run_id()][0]
    # the tables: the edited and the dropped runs change their cells
    assert any(line.startswith("mismatch: summary.csv") for line in mismatches(proc))
    last = proc.stdout.strip().splitlines()[-1]
    assert ": FAILED: " in last and f"{len(mismatches(proc))} mismatch(es)" in last


def _rewrite(bundle: Path, out: Path, change) -> Path:
    """A copy of ``bundle`` with its members passed through ``change(info, data)`` (which
    returns the members to write: [] drops one)."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b""
            for new_info, new_data in change(info, data):
                dst.addfile(new_info, io.BytesIO(new_data) if new_info.isfile() else None)
    return out


def test_a_bundle_that_does_not_match_or_escapes_is_refused(results, tmp_path, capsys):
    bundle = tmp_path / "b.tar.gz"
    audit.export("tiny", results, bundle, log=lambda line: None)

    def edit_summary(info, data):
        if info.name == "tiny/summary.csv":
            data = data.replace(b",", b";", 1)
            info.size = len(data)
        return [(info, data)]

    def escape(info, data):
        out = [(info, data)]
        if info.name == "tiny/summary.csv":
            evil = tarfile.TarInfo("../evil.txt")
            evil.size = 4
            out.append((evil, b"evil"))
        return out

    def link(info, data):
        out = [(info, data)]
        if info.name == "tiny/summary.csv":
            symlink = tarfile.TarInfo("tiny/passwd")
            symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
            out.append((symlink, b""))
        return out

    cases = [(edit_summary, "differ from its manifest (first: tiny/summary.csv)"),
             (escape, "'../evil.txt' would be written outside"),
             (link, "'tiny/passwd' is a link or a special file")]
    for index, (change, fragment) in enumerate(cases):
        bad = _rewrite(bundle, tmp_path / f"{change.__name__}.tar.gz", change)
        if index == 0:  # the command line in a process of its own
            proc = study("--verify", "--bundle", bad, timeout=300)
            code, err = proc.returncode, proc.stderr
        else:  # the same entry point in this process (no second interpreter start)
            code, err = study_main(["--verify", "--bundle", str(bad)]), capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], errors
    assert not (tmp_path / "evil.txt").exists()
    text = tmp_path / "not_a_bundle.tar.gz"
    text.write_text("hello")
    assert study_main(["--verify", "--bundle", str(text)]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_summary_comparison_is_by_column_whatever_the_columns(tmp_path):
    import pandas as pd

    old = pd.DataFrame({"table": ["a", "b"], "method": ["KD", "CKD"], "top1": ["1.5", "2.0"],
                        "extra": ["x", "y"]})
    new = pd.DataFrame({"table": ["b", "a"], "method": ["CKD", "KD"], "top1": ["2.0", "1.75"],
                        "new_column": ["1", "2"]})
    lines = audit.compare_summaries(old, new)
    assert any("column 'extra' is not in" in line for line in lines)
    assert any("lacks column 'new_column'" in line for line in lines)
    (row,) = [line for line in lines if line.startswith("summary.csv row")]
    assert "a / KD" in row and "top1 '1.5' vs '1.75'" in row
    assert len(lines) == 3
    assert audit.compare_summaries(new, new.copy()) == []


def test_verify_refusals_are_one_line(tmp_path, capsys):
    proc = study("--profile", "tiny", "--results-dir", tmp_path, "--verify", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no results of profile tiny" in proc.stderr
    for args, fragment in (
            (["--profile", "tiny", "--bundle", "x.tar.gz"], "--bundle FILE goes with --verify"),
            (["--verify", "--bundle", str(tmp_path / "none.tar.gz")], "no such file"),
            (["--profile", "tiny", "--results-dir", str(tmp_path), "--export", "x.zip"],
             "no results of profile tiny")):
        assert study_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and "Traceback" not in err, err


def test_detection_runs_are_evaluated_again(tmp_path):
    """A detection run's model is scored again on its validation images (box AP within
    audit.AP_POINTS); edited, its record is named in one line."""
    from ckd_lib.detection.config import DetectionConfig
    from ckd_lib.detection.engine import train_detection
    from ckd_lib.detection.shapes import make_shapes_dataset

    shapes = make_shapes_dataset(tmp_path / "shapes", num_train=8, num_val=4, seed=3)
    root = tmp_path / "results" / "p"
    record = train_detection(DetectionConfig(
        data_root=str(shapes), student="resnet18", student_weights=None, method="baseline",
        iterations=2, milestones=(1,), lr=0.01, warmup_iterations=1, images_per_batch=2,
        train_min_sizes=(64,), test_min_size=64, max_size=96, device="cpu", amp="off",
        workers=0, checkpoint_every=2, log_every=1, out_dir=str(root / "detection"),
        val_limit=4))
    lines = []
    found = audit.Findings(lines.append)
    audit.Auditor(root, found, "cpu").run()
    assert (found.records, found.evaluated, found.mismatches) == (1, 1, 0), lines
    path = root / "detection" / record["run_id"] / "record.json"
    edited = json.loads(path.read_text())
    for entry in edited["history"]:
        entry["bbox"]["AP"] += 5.0
    edited["best"]["AP"] += 5.0
    edited["last"]["AP"] += 5.0
    path.write_text(json.dumps(edited))
    lines.clear()
    found = audit.Findings(lines.append)
    audit.Auditor(root, found, "cpu").run()
    assert found.mismatches == 1 and f"run {record['run_id']}: its model gives AP" in lines[0]
