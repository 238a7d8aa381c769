"""A plugin method in the whole study: profile, notebooks, tables, figures, summary.csv.

``docs/examples/foo_profile.yaml`` extends the tiny profile with the FOO plugin in the
same-architecture table. Executed by the study runner (papermill), FOO must train like any
built-in method and appear in the report and its summary.csv, with no file inside ckd_lib that
names it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ckd_lib import results
from ckd_lib.study.profiles import load_profile
from ckd_lib.study.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def test_no_file_of_the_package_names_the_plugin_method():
    for path in (ROOT / "ckd_lib").rglob("*.py"):
        assert "FOO" not in path.read_text(), path


@pytest.mark.notebooks
def test_a_plugin_method_runs_through_the_study_into_the_report(tmp_path):
    profile = load_profile(ROOT / "docs" / "examples" / "foo_profile.yaml")
    lines = []
    log = open(tmp_path / "kernel.log", "w")
    runner = Runner(profile, results_dir=str(tmp_path), log=lines.append, stdout=log,
                    stderr=log, sync_pairs=False)
    code = runner.run()
    log.close()
    assert code == 0, "\n".join(lines) + (tmp_path / "kernel.log").read_text()[-4000:]
    root = tmp_path / profile.name
    records = results.load_records(root / "runs")
    foo = [r for r in records if r["config"]["method"] == "FOO"]
    assert len(foo) == 1 and foo[0]["config"]["label"] == "same_arch"
    assert "loss_foo" in foo[0]["history"][0]
    assert foo[0]["provenance"]["plugins"][0]["path"].endswith("foo_method.py")
    with open(root / "summary.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == "FOO"]
    assert rows and rows[0]["run_ids"] == foo[0]["run_id"]
    assert "FOO" in (root / "report.html").read_text()
