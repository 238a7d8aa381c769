"""The notebooks: their parameters contract, and every one executed through papermill.

The contract is checked for every notebook (fast). The execution test runs the whole ``tiny``
profile (generated data, 1-2 epochs, resnet8 stand-ins) through the study runner into a temporary
results folder, then checks what each notebook left behind, and that running it again executes
nothing. It is marked ``notebooks`` (a few minutes on 2 CPU cores); CI runs it.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest
from papermill.translators import PythonTranslator

from ckd_lib import results
from ckd_lib.study.params import notebook_parameters, parameters_cell, read_notebook

# one worker builds the session's tiny study for every module of this group (conftest)
pytestmark = pytest.mark.xdist_group("tiny_study")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
STUDY_NOTEBOOKS = ["00_environment", "10_teachers", "20_same_arch", "21_cross_arch",
                   "30_ablations", "40_matched_budget", "50_efficiency", "60_visualisations"]


def test_the_study_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    for name in STUDY_NOTEBOOKS:
        assert name in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_documented_for_papermill(path):
    nb = read_notebook(path)
    declared = notebook_parameters(nb, path.stem)  # raises on anything undocumented
    assert declared, "a notebook without parameters cannot be driven by a profile"
    # papermill's own inspection (what `papermill --help-notebook` prints) sees the same
    inspected = PythonTranslator.inspect(parameters_cell(nb))
    assert [p.name for p in inspected] == list(declared)
    for p in inspected:
        assert p.inferred_type_name == declared[p.name].annotation
        assert p.help == declared[p.name].help and p.help


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_paired_by_jupytext(path):
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(path))
    assert config is not None, "jupytext.toml is missing at the repository root"
    formats = config.default_formats(str(path))
    assert "ipynb" in formats and "py:percent" in formats
    assert config.default_formats(str(ROOT / "results" / "x" / "executed" / "a.ipynb")) is None


@pytest.mark.notebooks
def test_every_notebook_executes_on_the_tiny_profile(tiny_study):
    profile, runner, lines = tiny_study.runner.profile, tiny_study.runner, tiny_study.lines
    assert [n for n in STUDY_NOTEBOOKS if n not in profile.notebooks] == []
    tmp_path, kernel_output = tiny_study.results_dir, tiny_study.kernel_output
    assert tiny_study.code == 0, "\n".join(lines) + kernel_output[-5000:]
    root = tmp_path / "tiny"
    for name in profile.notebooks:
        executed = nbformat.read(root / "executed" / f"{name}.ipynb", as_version=4)
        assert executed.metadata["papermill"]["exception"] is not True
    # every training notebook says loudly that this is not the paper's setting
    for name in STUDY_NOTEBOOKS:
        assert "NOT THE PAPER'S SETTING" in (root / "executed" / f"{name}.log").read_text()
    artifacts = root / "artifacts"
    for name in ("teachers.json", "environment.json", "ablations.json", "matched_budget.json",
                 "efficiency.json", "efficiency.png", "tsne.json", "tsne.png",
                 "correlation.json", "correlation.png", "curves.png"):
        assert (artifacts / name).is_file(), name
    tsne = json.loads((artifacts / "tsne.json").read_text())
    assert set(tsne["points"]) == {"CE", "KD", "DKD", "CKD"}
    assert len(tsne["points"]["CKD"]) == len(tsne["labels"]) == 100
    correlation = json.loads((artifacts / "correlation.json").read_text())
    assert len(correlation["students"]["CKD"]["matrix"]) == 10
    efficiency = json.loads((artifacts / "efficiency.json").read_text())
    assert [r["method"] for r in efficiency["rows"]] == ["CE", "KD", "DKD", "CKD"]
    records = results.load_records(root / "runs")
    # progress: one line per epoch and student (every run trained once here), never per step
    epoch_lines = re.findall(r"^\[\S+/\S+ s\d+\] epoch \d+/\d+ ", kernel_output, re.M)
    assert len(epoch_lines) == sum(r["epochs_done"] for r in records)
    labels = {r["config"]["label"] for r in records}
    assert {"teacher", "same_arch", "cross_arch", "matched_budget"} <= labels
    assert any(label.startswith("ablation ") for label in labels)
    assert all(r["config"]["dataset"].startswith("synthetic") for r in records)
    assert (tmp_path / "report.html").is_file() and (root / "report.html").is_file()
    # the second run executes nothing: every executed copy is up to date
    lines.clear()
    assert runner.run() == 0
    assert sum("up to date, skipped" in line for line in lines) == len(profile.notebooks)


def test_a_one_seed_profile_supports_no_claim_and_its_report_opens_with_the_claims(tiny_study):
    """The tiny profile has one seed: every claim it runs is inconclusive (or not run), never
    supported; the report opens with the summary and the claims table, its rule beside it, and
    every claim's runs are records that exist."""
    from ckd_lib.report import prepare
    from ckd_lib.report.stats import SUPPORTED

    assert tiny_study.code == 0
    report = prepare("tiny", tiny_study.results_dir)
    verdicts = {e.claim.key: e.verdict.verdict for e in report.claims}
    assert SUPPORTED not in verdicts.values(), verdicts
    assert verdicts["C1"] == "inconclusive" and "3 needed" in report.claims[0].verdict.reason
    for e in report.claims:
        for rid in e.run_ids:
            assert Path(report.study.by_id[rid]["_path"]).is_file()
    html = (tiny_study.root / "report.html").read_text()
    text = re.sub(r"<[^>]+>", " ", html)
    summary, claims, main = (text.index("Reproduction summary"),
                             text.index("Claims: do they hold"), text.index("Main tables"))
    assert summary < claims < main
    assert "seed-paired difference" in text[claims:main]
    for link in re.findall(r'href="(runs/[^"]+/record\.json)"', html):
        assert (tiny_study.root / link).is_file()
