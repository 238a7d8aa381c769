"""The generated report: tables recomputed from real run records, published numbers, the notebook
and its HTML.

The records are real: the engine trains tiny students on synthetic data (a few seconds on a CPU).
Expected numbers are recomputed here straight from the record files with numpy, independently of
ckd_lib.report. Literature matching on CIFAR-100 uses hand-made record dicts, in its own section
below, and checks only which published numbers are matched, never our own numbers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ckd_lib.config import RunConfig
from ckd_lib.engine import train
from ckd_lib.report import NOT_SUPPLIED, build_report, prepare
from ckd_lib.report import html as fragments
from ckd_lib.report.artifacts import artifact_files, json_artifact_html
from ckd_lib.report.collect import build_frame, family, is_same_architecture
from ckd_lib.report.literature import PaperNumbers, load_literature, match_literature
from ckd_lib.report.tables import ordered_pairs

# one worker builds the session's report study for every module of this group (conftest)
pytestmark = pytest.mark.xdist_group("report_study")

DATA = "synthetic:num_classes=10,num_train=128,num_test=64"
PROFILE = "demo"
SEEDS = (0, 1)
METHODS = ("KD", "DKD", "CKD")
ABLATION = "ablation: tau=2"
BUDGET = "matched budget: 1 epoch"


# -- a tiny real study ---------------------------------------------------------------------------
def _config(runs: Path, method: str, seed: int, epochs: int = 2, **extra) -> RunConfig:
    teacher = {} if method == "CE" else {"teacher": "resnet8", "teacher_checkpoint": "untrained"}
    return RunConfig(student="resnet8", method=method, dataset=DATA, epochs=epochs, lr=0.05,
                     schedule="cosine", batch_size=32, seed=seed, device="cpu",
                     out_dir=str(runs), progress=False, eval_batch_size=64, **teacher, **extra)


def ensure_study(base: Path) -> Path:
    """Train the tiny study under base/results/demo/runs (finished runs are skipped by the
    engine, so calling this twice costs nothing) and return base/results."""
    results = base / "results"
    runs = results / PROFILE / "runs"
    for seed in SEEDS:
        train(_config(runs, "CE", seed))
        group = [_config(runs, m, seed) for m in METHODS]
        group.append(_config(runs, "CKD", seed, label=ABLATION, loss={"temperature": 2.0}))
        train(group)
    train(_config(runs, "CKD", 0, epochs=1, label=BUDGET))
    return results


def built_report(base: Path) -> Path:
    """results/demo/report.html of the tiny study, built once per test session."""
    results = ensure_study(base)
    html = results / PROFILE / "report.html"
    if not html.is_file():
        build_report(PROFILE, results)
    return html


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory) -> Path:
    return ensure_study(tmp_path_factory.getbasetemp() / "ckd_report_study")


@pytest.fixture(scope="session")
def report_html(tmp_path_factory) -> Path:
    return built_report(tmp_path_factory.getbasetemp() / "ckd_report_study")


def raw_records(results: Path) -> list[dict]:
    """The record files, read with json alone (not through ckd_lib)."""
    out = []
    for path in sorted((results / PROFILE / "runs").glob("*/record.json")):
        record = json.loads(path.read_text())
        record["_file"] = path
        out.append(record)
    return out


def expected(records: list[dict], method: str, label: str = "", epochs: int = 2) -> dict:
    sel = [r for r in records if r["config"]["method"] == method
           and r["config"]["label"] == label and r["config"]["epochs"] == epochs]
    best = np.array([r["best"]["top1"] for r in sel])
    last = np.array([r["last"]["top1"] for r in sel])
    spread = (lambda a: a.std(ddof=1)) if len(sel) > 1 else (lambda a: math.nan)
    return {"n": len(sel), "best_mean": best.mean(), "best_std": spread(best),
            "last_mean": last.mean(), "last_std": spread(last),
            "ids": sorted(r["run_id"] for r in sel)}


# -- tables from the records ---------------------------------------------------------------------
def test_main_table_cells_are_mean_std_over_seeds_of_the_records(study_dir):
    records = raw_records(study_dir)
    rep = prepare(PROFILE, study_dir)
    (table,) = rep.tables.main
    assert "same-architecture" in table.title
    (row,) = table.rows
    assert (row.teacher, row.student) == ("resnet8", "resnet8")
    for method in ("CE", *METHODS):
        want = expected(records, method)
        cell = row.cells[method]
        assert want["n"] == len(SEEDS) == cell.n
        assert cell.best.mean == pytest.approx(want["best_mean"])
        assert cell.best.std == pytest.approx(want["best_std"])
        assert cell.last.mean == pytest.approx(want["last_mean"])
        assert cell.last.std == pytest.approx(want["last_std"])
        top5 = [r["last"]["top5"] for r in records
                if r["config"]["method"] == method and r["run_id"] in want["ids"]]
        assert cell.top5.mean == pytest.approx(np.mean(top5))
        assert sorted(cell.run_ids) == want["ids"]
        for link in cell.links:  # links are relative to the profile's folder and exist
            assert (study_dir / PROFILE / link).is_file()
    # the teacher column: the accuracy the runs measured for the (untrained) teacher
    teacher = row.cells["teacher"]
    # an untrained teacher is drawn from the seed: one teacher per seed
    measured = {r["seed"]: r["teacher"]["test_top1"] for r in records if r["config"]["teacher"]}
    assert sorted(teacher.evaluated.values) == pytest.approx(sorted(measured.values()))
    assert "UNTRAINED" in teacher.note


def test_differences_to_teacher_student_and_kd(study_dir):
    records = raw_records(study_dir)
    (row,) = prepare(PROFILE, study_dir).tables.main[0].rows
    ckd = expected(records, "CKD")
    teacher_top1 = np.mean(list({r["seed"]: r["teacher"]["test_top1"] for r in records
                                 if r["config"]["teacher"]}.values()))
    deltas = row.cells["CKD"].deltas
    assert deltas["KD"].best.mean == pytest.approx(ckd["best_mean"] - expected(records, "KD")[
        "best_mean"])
    assert deltas["CE"].last.mean == pytest.approx(ckd["last_mean"] - expected(records, "CE")[
        "last_mean"])
    assert deltas["teacher"].best.mean == pytest.approx(ckd["best_mean"] - teacher_top1)
    # seed-paired: the interval is the t interval of the per-seed differences
    by_seed = {m: {r["seed"]: r["last"]["top1"] for r in records
                   if r["config"]["method"] == m and r["config"]["label"] == ""
                   and r["config"]["epochs"] == 2} for m in ("CKD", "KD")}
    d = np.array([by_seed["CKD"][s] - by_seed["KD"][s] for s in SEEDS])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert deltas["KD"].last.low == pytest.approx(d.mean() - half)
    assert deltas["KD"].equal_budget is True


def test_ablation_and_budget_tables(study_dir):
    records = raw_records(study_dir)
    tables = prepare(PROFILE, study_dir).tables
    (ablation,) = [c for c in tables.ablations.rows if c.label == ABLATION]
    want = expected(records, "CKD", ABLATION)
    assert ablation.n == 2 and ablation.best.mean == pytest.approx(want["best_mean"])
    assert "temperature=2.0" in ablation.settings
    assert ablation.deltas["main"].best.mean == pytest.approx(
        want["best_mean"] - expected(records, "CKD")["best_mean"])
    budgets = {row.budget.schedule_text: row for row in tables.budget.rows}
    assert set(budgets) == {"1 ep cosine", "2 ep cosine"}
    # a budget is counted in optimizer steps and images: 128 images at batch 32
    assert {(b.budget.steps, b.budget.images) for b in tables.budget.rows} == {(4, 128),
                                                                               (8, 256)}
    one = budgets["1 ep cosine"].cells["CKD"]
    assert one.n == 1 and math.isnan(one.best.std)
    assert one.run_ids == expected(records, "CKD", BUDGET, epochs=1)["ids"]
    # ablation runs never enter the main table or the budget table
    main_ids = tables.main[0].run_ids() | tables.budget.run_ids()
    assert not main_ids & set(want["ids"])


def test_every_run_is_shown_somewhere(study_dir):
    rep = prepare(PROFILE, study_dir)
    shown = set().union(*(t.run_ids() for t in rep.tables.all()))
    assert shown == {r["run_id"] for r in raw_records(study_dir)}


def test_a_rerun_of_a_counted_seed_is_shown_not_counted(study_dir, tmp_path):
    """Two records of one seed with the same settings (the code changed the config hash in
    between): the cell counts one, shows the other, and n stays the number of seeds."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(study_dir / PROFILE / "runs", results / PROFILE / "runs")
    (original,) = [r for r in raw_records(results) if r["config"]["method"] == "CKD"
                   and r["config"]["label"] == "" and r["seed"] == 0 and r["epochs_done"] == 2]
    stale = dict(original, run_id=original["run_id"][:-10] + "0123456789",
                 config_hash="0" * 64)
    stale.pop("_file")
    folder = results / PROFILE / "runs" / stale["run_id"]
    folder.mkdir()
    (folder / "record.json").write_text(json.dumps(stale))
    shutil.copy(original["_file"].parent / "model_last.pth", folder)  # a record has its model
    (row,) = prepare(PROFILE, results).tables.main[0].rows
    cell = row.cells["CKD"]
    assert cell.n == 2 and original["run_id"] in cell.run_ids
    assert list(cell.duplicates["run_id"]) == [stale["run_id"]]
    assert "not counted" in cell.note


def test_summary_csv_has_one_row_per_cell(study_dir, tmp_path):
    rep = prepare(PROFILE, study_dir)
    path = rep.write_summary(tmp_path / "summary.csv")
    rows = list(csv.DictReader(path.open()))
    n_cells = sum(len(t.cells()) for t in rep.tables.all())
    assert len(rows) == n_cells
    records = raw_records(study_dir)
    (ckd,) = [r for r in rows if r["method"] == "CKD" and r["table"].endswith("pairs")]
    want = expected(records, "CKD")
    assert float(ckd["best_top1_mean"]) == pytest.approx(want["best_mean"], abs=1e-4)
    assert float(ckd["last_top1_std"]) == pytest.approx(want["last_std"], abs=1e-4)
    assert ckd["n"] == "2" and sorted(ckd["run_ids"].split()) == want["ids"]
    assert all((study_dir / PROFILE / p).is_file() for p in ckd["records"].split())
    assert ckd["paper_top1"] == NOT_SUPPLIED
    assert "make reproduce PROFILE=demo" in ckd["command"]


def test_paper_numbers_not_supplied_until_the_csv_exists(study_dir, tmp_path):
    csv_path = tmp_path / "paper_numbers.csv"
    rep = prepare(PROFILE, study_dir, csv_path)
    cells = [c for t in rep.tables.main for c in t.cells()]
    assert cells and all(c.paper == NOT_SUPPLIED for c in cells)
    assert "paper: not supplied" in fragments.pair_table_html(rep.tables.main[0], rep.sources)
    csv_path.write_text("dataset,teacher,student,method,top1,source\n"
                        f'"{DATA}",resnet8,resnet8,CKD,12.34,test table 1\n')
    rep = prepare(PROFILE, study_dir, csv_path)
    (row,) = rep.tables.main[0].rows
    assert row.cells["CKD"].paper.top1 == 12.34
    assert row.cells["KD"].paper == "not in paper_numbers.csv"
    page = fragments.pair_table_html(rep.tables.main[0], rep.sources)
    assert "paper: 12.34" in page and "test table 1" in page
    assert rep.summary().query("method == 'CKD'")["paper_top1"].iloc[0] == 12.34


def test_a_malformed_paper_csv_is_reported_not_used(tmp_path):
    bad = tmp_path / "paper_numbers.csv"
    bad.write_text("dataset,student,top1\ncifar100,resnet8x4,1\n")
    paper = PaperNumbers(bad)
    assert not paper.supplied and "lacks column" in paper.error
    assert paper.lookup("cifar100", "resnet32x4", "resnet8x4", "CKD") == NOT_SUPPLIED


def test_banner_says_what_the_numbers_are(study_dir):
    rep = prepare(PROFILE, study_dir)
    headline, detail, full = fragments.banner(rep.study)
    assert not full
    assert headline.startswith("DEMO on synthetic data")
    assert "NOT the paper's CIFAR-100 numbers" in headline
    assert "UNTRAINED" in detail and "not supplied" in detail


def test_provenance_comes_from_the_records(study_dir):
    rep = prepare(PROFILE, study_dir)
    records = raw_records(study_dir)
    commits = {(r["provenance"]["commit"], r["provenance"]["dirty"]) for r in records}
    assert {(c["commit"], c["dirty"]) for c in rep.provenance.commits} == commits
    assert sum(c["runs"] for c in rep.provenance.commits) == len(records)
    assert rep.provenance.devices[0]["device_type"] == "cpu"
    assert rep.provenance.first_written and rep.provenance.profile == PROFILE
    report_cmds = rep.commands["report"]["commands"]
    assert report_cmds == ["make reproduce PROFILE=demo",
                           "python -m ckd_lib.study --profile demo --only 90_report"]


def test_an_empty_profile_still_makes_a_report(tmp_path):
    rep = prepare("nothing", tmp_path)
    assert rep.study.empty and not rep.tables.main
    assert "no complete run records" in fragments.banner(rep.study)[0]
    assert rep.summary().empty


# -- the notebook and its HTML -------------------------------------------------------------------
@pytest.mark.notebooks
def test_report_notebook_builds_the_html(report_html):
    profile_dir = report_html.parent
    results = profile_dir.parent
    page = report_html.read_text()
    assert "<base " not in page  # links are relative to the report's own folder
    # the banner, at the top, in words nobody can miss
    assert 'id="ckd-banner"' in page
    banner = re.search(r"DEMO on synthetic data[^<]*NOT the paper(&#x27;|')s CIFAR-100 numbers",
                       page)
    assert banner and banner.start() < page.index("Main tables")
    for title in ("same-architecture pairs", "Teachers", "Ablations and other configurations",
                  "Matched budget", "Provenance"):
        assert title in page
    # figures are embedded PNGs; the missing artifacts are said to be missing
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) >= 3
    assert "No correlation heatmap artifact" in page and "No t-SNE artifact" in page
    # no input cells, no code, no script fetched from the network
    code_cells = re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', page)
    assert code_cells and all("jp-mod-noInput" in c for c in code_cells)
    body = re.sub(r"<style.*?</style>", "", page, flags=re.S)
    assert 'class="highlight' not in body and "jp-InputPrompt" not in body
    assert "prepare(profile" not in body and "import " not in body
    assert not re.search(r"<script[^>]+src=", page)
    # every record link in the page points to a record file
    links = set(re.findall(r'href="([^"]+/record\.json)"', page))
    assert links and all((profile_dir / link).is_file() for link in links)
    assert (profile_dir / "summary.csv").is_file()
    assert (profile_dir / "executed" / "90_report.ipynb").is_file()
    # the top-level page is the index of the profiles' reports, and links to this one
    assert f'href="{PROFILE}/report.html"' in (results / "report.html").read_text()


def test_report_shows_artifacts_when_present(study_dir, tmp_path):
    # a private copy of the study with artifacts, so the shared report stays as it is
    import shutil

    results = tmp_path / "results"
    shutil.copytree(study_dir / PROFILE / "runs", results / PROFILE / "runs")
    artifacts = results / PROFILE / "artifacts"
    artifacts.mkdir(parents=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.scatter([0, 1], [1, 0])
    fig.savefig(artifacts / "tsne_students.png")
    plt.close(fig)
    (artifacts / "efficiency_table.json").write_text(json.dumps(
        [{"method": "CKD", "ms_per_iteration": 12.5}, {"method": "KD", "ms_per_iteration": 11.0}]))
    rep = prepare(PROFILE, results)
    assert [p.name for p in artifact_files(rep.study, "tsne", ".png")] == ["tsne_students.png"]
    table = json_artifact_html(rep.study, artifacts / "efficiency_table.json")
    assert "ms_per_iteration" in table and "12.5" in table


# -- literature matching (hand-made CIFAR-100 record dicts: matching logic only) -----------------
def _fake_record(run_id: str, method: str, teacher: str | None, student: str) -> dict:
    config = {"dataset": "cifar100", "teacher": teacher, "student": student, "method": method,
              "seed": 0, "label": "", "epochs": 240, "schedule": "step", "batch_size": 64,
              "lr": 0.05, "milestones": [150, 180, 210], "lr_decay": 0.1, "loss": {}}
    return {"run_id": run_id, "config": config, "best": {"top1": 0.0, "epoch": 1},
            "last": {"top1": 0.0, "epoch": 1}, "history": [], "_path": ""}


def test_literature_matching_on_cifar100():
    rows = load_literature()
    kd = match_literature(rows, "cifar100", "resnet32x4", "resnet8x4", "KD")
    assert [(p.top1, p.basis) for p in kd] == [(73.33, "last epoch")]
    assert "RepDistiller" in kd[0].source
    dkd = match_literature(rows, "cifar100", "resnet32x4", "resnet8x4", "DKD")
    assert [(p.top1, p.basis) for p in dkd] == [(76.32, "best epoch")]
    assert "mdistiller" in dkd[0].source
    student = match_literature(rows, "cifar100", "resnet32x4", "resnet8x4", "CE")
    assert [p.top1 for p in student] == [72.5]
    teacher = match_literature(rows, "cifar100", "resnet32x4", "resnet8x4", "teacher")
    assert [p.top1 for p in teacher] == [79.42]
    assert match_literature(rows, "fashion_mnist", "resnet32x4", "resnet8x4", "KD") == []
    assert match_literature(rows, "cifar100", "resnet32x4", "resnet8x4", "CKD") == []


def test_cifar100_pairs_split_and_ordered_like_the_paper():
    frame = build_frame([_fake_record("a", "KD", "resnet32x4", "ShuffleV2"),
                         _fake_record("b", "KD", "resnet56", "resnet20"),
                         _fake_record("c", "KD", "vgg13", "vgg8")], ".")
    pairs = set(zip(frame["teacher"], frame["student"], strict=True))
    assert ordered_pairs("cifar100", pairs) == [("resnet56", "resnet20"), ("vgg13", "vgg8"),
                                                ("resnet32x4", "ShuffleV2")]
    assert is_same_architecture("wrn_40_2", "wrn_16_2")
    assert is_same_architecture("resnet32x4", "resnet8x4")
    assert not is_same_architecture("resnet32x4", "ShuffleV1")
    assert not is_same_architecture("vgg13", "MobileNetV2")
    assert family("ResNet50") == "resnet"
