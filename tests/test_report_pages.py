"""The report as a researcher reads it: one colour per method and one name per pair everywhere,
differences across budgets said to be so (with the equal-budget difference beside them), the
efficiency section in words and units, only the sections a profile has runs for, one report per
profile with an index of them, and no page that loads anything from the network.

The records are the tiny real study of test_report.py; where a case needs records the study does
not have (a KD trained at another budget, detection runs), copies of real records are edited and
the expected numbers recomputed here from the files with numpy.
"""

from __future__ import annotations

import hashlib
import html as html_module
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

# one worker builds the session's report study for every module of this group (conftest)
pytestmark = pytest.mark.xdist_group("report_study")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import PROFILE, ensure_study, raw_records  # noqa: E402

from ckd_lib.config import methods  # noqa: E402
from ckd_lib.report import figures, prepare, publish  # noqa: E402
from ckd_lib.report import html as fragments  # noqa: E402
from ckd_lib.report.artifacts import efficiency_html  # noqa: E402
from ckd_lib.report.palette import method_color, method_order  # noqa: E402


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory) -> Path:
    """The tiny study of test_report.py (the same folder: trained once per session)."""
    return ensure_study(tmp_path_factory.getbasetemp() / "ckd_report_study")


# -- offline: no page loads anything from the network ---------------------------------------------
class _Resources(HTMLParser):
    """Every URL a page would fetch to render: src/href/data/poster/srcset of the elements that
    load something, and url(...) / @import in its CSS."""

    LOADING = {"script", "link", "img", "iframe", "source", "video", "audio", "embed", "object",
               "track", "input", "image", "use"}

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADING:
            for name in ("src", "href", "data", "poster", "xlink:href"):
                if attrs.get(name):
                    self.urls.append(attrs[name])
            for item in (attrs.get("srcset") or "").split(","):
                if item.strip():
                    self.urls.append(item.split()[0])
        if attrs.get("style"):
            self._css(attrs["style"])
        self._style = tag == "style"

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        if self._style:
            self._css(data)

    def _css(self, text):
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments cite URLs, load nothing
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", text)
        self.urls += re.findall(r"@import\s+['\"]([^'\"]+)", text)


def external_resources(page: str) -> list[str]:
    parser = _Resources()
    parser.feed(page)
    return [u for u in parser.urls if re.match(r"^\s*(https?:)?//", u, re.I)]


def test_the_offline_check_finds_what_nbconvert_loads_by_default(tmp_path):
    """The check is not vacuous: nbconvert's default page loads require.js and MathJax."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$x$")])
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert any("require" in u for u in external_resources(page))
    assert external_resources('<img src="//cdn.example/x.png"><style>a{background:'
                              'url("https://x/y.png")}</style>') == ["//cdn.example/x.png",
                                                                     "https://x/y.png"]


@pytest.mark.notebooks
def test_every_page_a_study_writes_loads_nothing_from_the_network(tmp_path, study_dir):
    """A two-notebook profile through the study runner: its report, its executed notebook as
    HTML and the index, each free of external resources."""
    from ckd_lib.study.profiles import load_profile
    from ckd_lib.study.runner import Runner

    profile_file = tmp_path / "mini.yaml"
    profile_file.write_text(
        "description: the environment check and the report\nextends: tiny\ncommon: {}\n"
        "notebooks:\n  00_environment:\n"
        "    dataset: 'synthetic:num_classes=10,num_train=64,num_test=32'\n  90_report: {}\n")
    results = tmp_path / "results"
    shutil.copytree(study_dir / PROFILE / "runs", results / "mini" / "runs")
    lines: list[str] = []
    with open(tmp_path / "kernel.log", "w") as log:
        code = Runner(load_profile(profile_file), results_dir=str(results), log=lines.append,
                      stdout=log, stderr=log, sync_pairs=False).run()
    assert code == 0, "\n".join(lines) + (tmp_path / "kernel.log").read_text()[-3000:]
    pages = sorted(results.rglob("*.html"))
    names = {p.relative_to(results).as_posix() for p in pages}
    assert {"report.html", "mini/report.html", "mini/executed/00_environment.html"} <= names
    for page in pages:
        assert external_resources(page.read_text()) == [], page
    # the executed notebook's page shows its code: it is the record of what ran
    assert "load_dataset" in (results / "mini/executed/00_environment.html").read_text()
    report = (results / "mini/report.html").read_text()
    assert 'href="executed/00_environment.html"' in report


# -- one colour per method, one name per pair ----------------------------------------------------
def test_method_order_and_colours_come_from_one_place():
    order = method_order()
    assert [m for m in order if m in methods()] == methods()  # the registry's own order
    assert order[0] == "CE"
    distill = [m for m in order if m not in ("CE", "baseline")]
    colours = [method_color(m) for m in distill]
    assert len(set(colours)) == len(colours)  # every method its own colour
    # pinned: a figure made today and one made next year colour CKD alike
    assert (method_color("KD"), method_color("DKD"), method_color("CKD")) == (
        "#0173b2", "#029e73", "#d55e00")
    assert method_color("CE") == method_color("baseline") not in colours


def test_an_unknown_methods_colour_does_not_depend_on_the_interpreter():
    """Python salts str hashes per process; the colour must not follow."""
    code = ("from ckd_lib.report.palette import method_color; "
            "print(method_color('MyNewKD'), method_color('Other+KD'))")
    seen = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        seen.add(out.stdout.strip())
    want = " ".join(method_color(n) for n in ("MyNewKD", "Other+KD"))
    assert seen == {want}  # and neither takes a registered method's colour:
    assert not set(want.split()) & {method_color(m) for m in method_order()}


def _legend_colours(fig) -> dict[str, tuple]:
    out = {}
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            colour = (handle.get_facecolor() if hasattr(handle, "get_facecolor")
                      and not isinstance(handle, plt.Line2D) else handle.get_color())
            out[text.get_text()] = mcolors.to_hex(colour)
    return out


def test_a_method_has_one_colour_in_every_figure_and_table(study_dir):
    rep = prepare(PROFILE, study_dir)
    drawn = {"gain": figures.gain_over_kd(rep.tables),
             "accuracy": figures.accuracy_curves(rep.study, rep.tables),
             "loss": figures.loss_curves(rep.study, rep.tables)}
    table = fragments.pair_table_html(rep.tables.main[0], rep.sources)
    swatches = dict((m, c) for c, m in re.findall(
        r'background:(#[0-9a-f]{6})"></span>([^<]+)</span>[^<]*</th>', table))
    swatches["CE"] = swatches.pop("student")
    assert swatches == {m: method_color(m) for m in ("teacher", "CE", "KD", "DKD", "CKD")}
    shown = {m: 0 for m in swatches}
    for name, fig in drawn.items():
        for method, colour in _legend_colours(fig).items():
            if method in swatches:
                assert colour == swatches[method], (name, method)
                shown[method] += 1
    assert shown["CKD"] == shown["DKD"] == 3 and shown["KD"] == shown["CE"] == 2
    # the bars themselves, not only the legend
    bars = {mcolors.to_hex(p.get_facecolor()) for p in drawn["gain"].axes[0].patches}
    assert bars == {method_color("DKD"), method_color("CKD")}
    for fig in drawn.values():
        plt.close(fig)


def test_a_pair_has_one_name_in_tables_and_figures(study_dir):
    rep = prepare(PROFILE, study_dir)
    name = "resnet8 → resnet8"
    gain = figures.gain_over_kd(rep.tables)
    ticks = [t.get_text() for t in gain.axes[0].get_xticklabels()]
    curves = figures.accuracy_curves(rep.study, rep.tables)
    assert ticks[0].splitlines()[0] == name and curves.axes[0].get_title() == name
    for html in (fragments.pair_table_html(rep.tables.main[0], rep.sources),
                 fragments.ablations_html(rep.tables.ablations, rep.sources)):
        text = re.sub(r"<[^>]+>", "", html)
        assert name in text and "->" not in text
    plt.close(gain)
    plt.close(curves)


# -- differences across budgets ----------------------------------------------------------------
def _copy(record: dict, runs: Path, suffix: str, **config) -> dict:
    """A copy of a real record as another run (its config edited; a shorter budget keeps the
    first epochs of its history, as the report believes only records their history supports)."""
    new = {k: v for k, v in record.items() if k != "_file"}
    new["run_id"] = record["run_id"] + suffix
    new["config"] = {**record["config"], **config}
    epochs = new["config"]["epochs"]
    if len(new["history"]) != epochs:
        new["history"] = new["history"][:epochs]
        best = max(new["history"], key=lambda h: h["test_top1"])
        new["best"], new["last"] = ({"epoch": h["epoch"], "top1": h["test_top1"],
                                     "top5": h["test_top5"]} for h in (best, new["history"][-1]))
        new["epochs_done"] = epochs
    (runs / new["run_id"]).mkdir(parents=True)
    (runs / new["run_id"] / "record.json").write_text(json.dumps(new))
    shutil.copy(record["_file"].parent / "model_last.pth", runs / new["run_id"])
    return {**new, "_file": runs / new["run_id"] / "record.json"}


def test_a_difference_across_budgets_says_so_and_shows_the_equal_budget_one(study_dir, tmp_path):
    """KD moved to a 1-epoch step budget; a CKD run at that budget (labelled matched budget):
    the Δ CKD − KD cell names both budgets and gives CKD − KD at 1 ep step from those runs."""
    results = tmp_path / "results"
    runs = results / PROFILE / "runs"
    runs.mkdir(parents=True)
    records = raw_records(study_dir)
    main = [r for r in records if r["config"]["label"] == "" and r["config"]["epochs"] == 2]
    step = {"epochs": 1, "schedule": "step", "milestones": [1]}
    kd = [_copy(r, runs, "", **step) for r in main if r["config"]["method"] == "KD"]
    ckd = [_copy(r, runs, "", **{}) for r in main if r["config"]["method"] == "CKD"]
    matched = [_copy(r, runs, "m", label="matched budget", **step) for r in ckd]
    rep = prepare(PROFILE, results)
    (row,) = rep.tables.main[0].rows
    cell = fragments.delta_html(row, "CKD", "KD")
    text = html_module.unescape(re.sub(r"<[^>]+>", "", cell))
    # steps, not epochs: 2 epochs against 1 at the same batch is twice the optimizer steps
    assert ("unequal budgets: CKD 2× KD's steps, 2× the images (2 ep cosine bs 32 vs 1 ep step "
            "bs 32)") in text
    by_seed = {name: {r["seed"]: r["last"]["top1"] for r in runs_}
               for name, runs_ in (("kd", kd), ("ckd", ckd), ("matched", matched))}
    equal = np.mean([by_seed["matched"][s] - by_seed["kd"][s] for s in by_seed["kd"]])
    assert "at equal budget (4 steps · 128 images, 1 ep step bs 32):" in text
    assert f"last {equal:+.2f} [" in text
    across = np.mean([by_seed["ckd"][s] - by_seed["kd"][s] for s in by_seed["kd"]])
    assert row.cells["CKD"].deltas["KD"].last.mean == pytest.approx(across)
    assert "ckd-pos" not in cell.split("at equal budget")[1].split("each at its own")[1]
    # the figure: solid bars at an equal budget, hatched ones across budgets, the title says so
    fig = figures.gain_over_kd(rep.tables)
    title = fig.axes[0].get_title()
    assert "EQUAL budget" in title and "UNEQUAL budgets" in title
    assert "CKD at 2 ep cosine" in title and "KD at 1 ep step" in title
    bars = [p for p in fig.axes[0].patches
            if mcolors.to_hex(p.get_facecolor()) == method_color("CKD")]
    assert sorted(p.get_height() for p in bars) == pytest.approx(sorted([across, equal]))
    assert [bool(p.get_hatch()) for p in sorted(bars, key=lambda p: p.get_height() == across)] \
        == [False, True]
    plt.close(fig)


# -- the efficiency section --------------------------------------------------------------------
def test_efficiency_section_has_named_columns_units_and_one_precision_each(study_dir, tmp_path):
    from ckd_lib.analysis import time_loss, time_methods

    results = tmp_path / "results"
    shutil.copytree(study_dir / PROFILE / "runs", results / PROFILE / "runs")
    rows = time_methods(("CE", "KD", "CKD"), "resnet8", "resnet8", batch_size=8, num_classes=10,
                        device="cpu", steps=2, warmup=1, rounds=3)
    loss_rows = time_loss([8, 32], num_classes=10, device="cpu", repeats=2)
    path = results / PROFILE / "artifacts" / "efficiency.json"
    path.parent.mkdir(parents=True)
    # as notebook 50 writes it, dataset stamp included (it does not describe the measurement)
    path.write_text(json.dumps({"profile": PROFILE, "dataset": "cifar100",
                                "pair": "resnet56->resnet20", "rows": rows,
                                "loss_rows": loss_rows}))
    rep = prepare(PROFILE, results)
    html = efficiency_html(rep.study, path)
    text = re.sub(r"<[^>]+>", " ", html)
    for raw in ("ms_per_iter", "saved_activations_mb", "loss_rows", "trainable_parameters",
                "cifar100", "CIFAR-100"):
        assert raw not in text
    assert "activations saved for backward (MiB)" in text and "MB)" not in text
    assert "resnet8 → resnet8" in text and "random inputs with 10 classes" in text
    assert "interleaved: 3 rounds, each timing 2 iterations of every method" in text
    assert ("time vs KD" in text) != ("NOISY MEASUREMENT" in text)
    # one precision per column: every number of a column has the same decimals
    for table in re.findall(r"<table.*?</table>", html, flags=re.S):
        body = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        cells = [re.findall(r'class="ckd-right"><span class="ckd-n">([^<]*)<', r) for r in body]
        columns = list(zip(*[c for c in cells if c], strict=True))
        assert columns
        for column in columns:
            decimals = {len(v.split(".")[1]) if "." in v else 0 for v in column if v != "–"}
            assert len(decimals) == 1, column
    fig = figures.efficiency_figure(json.loads(path.read_text()))
    fig.canvas.draw()
    memory, loss = fig.axes[1], fig.axes[2]
    assert "MiB" in memory.get_ylabel()
    assert [t.get_text() for t in loss.get_xticklabels()] == ["8", "32"]
    assert all(re.fullmatch(r"[0-9.,]+", t.get_text()) for t in loss.get_yticklabels()
               if t.get_text())
    plt.close(fig)


def test_log_axis_labels_are_the_ticks_values_even_within_one_decade():
    """A loss timed at 0.17-0.38 ms puts ticks 0.18, 0.2, 0.22, ...: each label must read as its
    own value (one significant digit printed 0.2 four times)."""
    data = {"rows": [{"method": m, "ms_per_iter": 100.0, "saved_activations_mb": 40.0,
                      "device": "cpu", "batch_size": 64} for m in ("KD", "CKD")],
            "loss_rows": [{"loss": "KD", "batch_size": 32, "ms": 0.17},
                          {"loss": "KD", "batch_size": 64, "ms": 0.18},
                          {"loss": "CKD", "batch_size": 32, "ms": 0.27},
                          {"loss": "CKD", "batch_size": 64, "ms": 0.38}]}
    fig = figures.efficiency_figure(data)
    fig.canvas.draw()
    axis = fig.axes[2]
    low, high = axis.get_ylim()
    shown = [(t.get_position()[1], t.get_text()) for t in axis.get_yticklabels()
             if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(shown) >= 2
    assert len({text for _, text in shown}) == len(shown)  # no label twice
    for value, text in shown:
        assert float(text.replace(",", "")) == pytest.approx(value, rel=0.01)
    plt.close(fig)
    assert [figures._plain(v) for v in (0.05, 0.225, 2, 2.5, 1024, 0.0012)] == [
        "0.05", "0.225", "2", "2.5", "1,024", "0.0012"]


# -- a profile shows what it has; every profile keeps its report ------------------------------
def _detection_record(folder: Path, method: str, seed: int, ap: float) -> None:
    from ckd_lib.detection.config import DetectionConfig

    teacher = None if method == "baseline" else "R101"
    config = DetectionConfig.from_recipe(teacher, "R18", method, data_root="shapes",
                                         iterations=10, student_weights=None, seed=seed,
                                         teacher_checkpoint="t.pth" if teacher else None)
    run_id = config.run_id()
    metrics = {m: ap + i for i, m in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl"))}
    (folder / run_id).mkdir(parents=True)
    model = folder / run_id / "model_last.pth"
    model.write_bytes(run_id.encode())  # a record is believed only with its model file
    record = {"record_version": 2, "run_id": run_id, "status": "complete", "task": "detection",
              "label": "coco", "config": config.to_dict(), "config_hash": config.config_hash(),
              "history": [{"iteration": 10, "bbox": metrics}], "iterations_done": 10,
              "model": {"file": model.name, "bytes": model.stat().st_size,
                        "sha256": hashlib.sha256(model.read_bytes()).hexdigest()},
              "best": {"iteration": 10, **metrics},
              "last": {"iteration": 10, **metrics}, "data": {"categories": [1, 2, 3]},
              "teacher": {"checkpoint": "t.pth", "metrics": {"bbox": {"AP": 30.0}}}
              if teacher else {},
              "provenance": {"commit": "abc1234", "dirty": False, "device_type": "cpu",
                             "device_name": "x86_64", "device_count": 1, "torch": "2"}}
    (folder / run_id / "record.json").write_text(json.dumps(record))


@pytest.mark.notebooks
def test_a_detection_profile_shows_its_sections_and_keeps_its_own_report(tmp_path, study_dir):
    from ckd_lib.report import build_report

    results = tmp_path / "results"
    for seed, (base, dkd) in enumerate([(20.0, 22.0), (21.0, 23.5)]):
        _detection_record(results / "coco_demo" / "detection", "baseline", seed, base)
        _detection_record(results / "coco_demo" / "detection", "DKD", seed, dkd)
    coco = build_report("coco_demo", results)
    page = coco.read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    assert "MS-COCO detection" in text and "MS-COCO runs NOT in the paper" in text
    for absent in ("Main tables", "Teachers", "Ablations and other configurations",
                   "Matched budget", "No efficiency artifact", "No t-SNE artifact",
                   "no complete run records", "Efficiency"):
        assert absent not in text, absent
    # provenance comes from the detection records
    assert "abc1234" in text and "4 records" in text
    # another profile's report does not replace this one; the index lists both
    before = coco.read_bytes()
    shutil.copytree(study_dir / PROFILE / "runs", results / PROFILE / "runs")
    executed = results / PROFILE / "executed" / "90_report.ipynb"
    executed.parent.mkdir(parents=True)
    shutil.copyfile(results / "coco_demo" / "executed" / "90_report.ipynb", executed)
    publish(PROFILE, results, executed)
    assert coco.read_bytes() == before
    index = (results / "report.html").read_text()
    for name in ("coco_demo", PROFILE):
        assert f'href="{name}/report.html"' in index
        meta = json.loads((results / name / "report.json").read_text())
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", meta["built"])
        assert meta["built"] in index and meta["headline"] in index.replace("&#x27;", "'")
    assert "MS-COCO runs NOT in the paper" in index and "DEMO on synthetic data" in index
    assert "11 classification runs" in index
    # a summary.csv with no table cell in it is not offered
    assert f'href="{PROFILE}/summary.csv"' in index and 'href="coco_demo/summary.csv"' not in index
    assert "4 detection runs" in index


# -- figures a reader can read -------------------------------------------------------------------
def test_figures_have_class_legends_integer_epochs_and_legends_off_the_data(study_dir):
    from ckd_lib.data.fashion_mnist import CLASSES

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5)
    tsne = figures.tsne_figure({"dataset": "fashion_mnist", "labels": labels.tolist(),
                                "points": {m: rng.normal(size=(50, 2)).tolist()
                                           for m in ("CKD", "CE", "KD")}})
    assert [t.get_text() for t in tsne.legends[0].get_texts()] == [
        f"{i}: {name}" for i, name in enumerate(CLASSES)]
    assert [ax.get_title() for ax in tsne.axes] == ["CE", "KD", "CKD"]  # the method order
    rep = prepare(PROFILE, study_dir)
    drawn = [tsne, figures.accuracy_curves(rep.study, rep.tables),
             figures.loss_curves(rep.study, rep.tables), figures.gain_over_kd(rep.tables),
             figures.accuracy_vs_time(rep.study)]
    for fig in drawn:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), fig
    for fig in drawn[1:3]:
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
    # losses on one axis only as ratios to their own first epoch, which the figure says
    loss = drawn[2]
    assert "divided by its own epoch-1 value" in loss._suptitle.get_text()
    first = [line.get_ydata()[0] for ax in loss.axes for line in ax.get_lines()
             if len(line.get_ydata()) > 1]
    assert first and np.allclose(first, 1.0)
    for fig in drawn:
        plt.close(fig)


def test_notebook_curves_take_method_colours_and_start_the_loss_at_one():
    """Notebook 60's curves: each run in its method's colour, every loss divided by its own
    first epoch (CKD's ~37 and KD's ~4 share one axis), integer epoch ticks."""
    def record(method, losses, top1):
        history = [{"epoch": e + 1, "test_top1": t, **losses[e]} for e, t in enumerate(top1)]
        return {"config": {"method": method}, "history": history}

    kd = [{"loss_ce": 1.0, "loss_kd": 3.0}, {"loss_ce": 0.5, "loss_kd": 1.5}]
    ckd = [{"loss_ce": 1.0, "loss_ckd": 37.0}, {"loss_ce": 0.8, "loss_ckd": 34.2}]
    records = [record("KD", kd, [40.0, 50.0]), record("CKD", ckd, [45.0, 55.0])]
    fig = figures.run_curves(records, ["KD s0", "CKD s0"])
    fig.canvas.draw()
    accuracy, loss = fig.axes
    lines = [line for line in loss.get_lines() if line.get_marker() == "."]  # not the y=1 rule
    assert [mcolors.to_hex(line.get_color()) for line in lines] == [
        method_color("KD"), method_color("CKD")]
    assert [list(line.get_ydata()) for line in lines] == [[1.0, 0.5], [1.0, 35.0 / 38.0]]
    assert all(float(t).is_integer() for t in accuracy.get_xticks())
    assert [mcolors.to_hex(line.get_color()) for line in accuracy.get_lines()] == [
        method_color("KD"), method_color("CKD")]
    plt.close(fig)
