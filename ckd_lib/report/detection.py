"""The report's MS-COCO table, read from the detection run records of one profile.

Rows are (detector kind, teacher -> student); columns the teacher's own AP (measured by the
engine on the same validation images, stored in every distillation record), the student alone
(``baseline``) and each distillation method. Every cell gives box AP mean ± std over seeds with
n, AP50 / AP75 / APs / APm / APl, mask AP for Mask R-CNN, the iterations, and links to the run
records — nothing else: there is no published COCO number in ``literature.csv`` to show beside
it, and the CKD paper's own numbers are the user's to supply (``results/paper_numbers.csv``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import pandas as pd

from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.evaluate import METRIC_NAMES
from ckd_lib.detection.models import COCO_CATEGORY_IDS, MAX_SIZE, TEST_MIN_SIZE, TRAIN_MIN_SIZES
from ckd_lib.rehearsal import is_rehearsal
from ckd_lib.report.collect import relative_path
from ckd_lib.report.html import CSS
from ckd_lib.report.palette import pair_label, sort_methods
from ckd_lib.results import load_records
from ckd_lib.study.paths import resolve

__all__ = ["DetectionTable", "departures", "detection_banner_html", "detection_frame",
           "detection_headline", "detection_html", "detection_table"]

SHORT = {"resnet18": "R18", "resnet34": "R34", "resnet50": "R50", "resnet101": "R101",
         "mobilenet_v2": "MobileNetV2"}


def detection_frame(results_dir: str | Path, profile: str) -> pd.DataFrame:
    """One row per complete detection run of ``results/<profile>/detection``."""
    results_dir = resolve(results_dir)
    folder = results_dir / profile / "detection"
    rows = []
    for record in load_records(folder):
        if record.get("task") != "detection":
            continue
        config, last = record["config"], record["last"]
        teacher = record.get("teacher") or {}
        metrics = teacher.get("metrics") or {}
        row = {"run_id": record["run_id"], "label": record.get("label", ""),
               "kind": config["kind"], "teacher": config.get("teacher"),
               "student": config["student"], "method": config["method"],
               "iterations": config["iterations"], "seed": config["seed"],
               "images_per_batch": config["images_per_batch"],
               "link": relative_path(record["_path"], folder.parent),
               "teacher_checkpoint": teacher.get("checkpoint"),
               "teacher_AP": (metrics.get("bbox") or {}).get("AP"),
               "commit": record["provenance"].get("commit"),
               "dirty": record["provenance"].get("dirty"),
               "device": record["provenance"].get("device_name"),
               "torch": record["provenance"].get("torch"),
               "rehearsal": is_rehearsal(record)}
        row["departures"] = departures(record)
        row.update({m: last.get(m) for m in METRIC_NAMES})
        row.update({f"mask_{m}": last.get(f"mask_{m}") for m in METRIC_NAMES})
        rows.append(row)
    return pd.DataFrame(rows)


def departures(record: dict) -> list[str]:
    """How a detection run differs from the paper's setting (empty: it is the paper's)."""
    config = record["config"]
    out = ["REHEARSAL: a few iterations on generated images"] if is_rehearsal(record) else []
    if list(record.get("data", {}).get("categories", [])) != list(COCO_CATEGORY_IDS):
        out.append("not COCO's 80 categories (generated or other data)")
    if config.get("train_limit") or config.get("val_limit"):
        out.append("image subsets")
    if tuple(config["train_min_sizes"]) != TRAIN_MIN_SIZES or \
            (config["test_min_size"], config["max_size"]) != (TEST_MIN_SIZE, MAX_SIZE):
        out.append("smaller images")
    if config.get("student_weights") is None:
        out.append("students from scratch (no ImageNet backbone)")
    if config.get("teacher_checkpoint") == "untrained":
        out.append("UNTRAINED teacher")
    recipe = config.get("recipe", "")
    if recipe.count(":") == 3:
        _, teacher, student, method = recipe.split(":")
        try:
            published = DetectionConfig.from_recipe(teacher or None, student, method,
                                                    data_root=".")
        except ValueError:
            published = None
        if published is not None:
            if config["iterations"] < published.iterations:
                out.append("shortened schedules")
            if config["images_per_batch"] != published.images_per_batch:
                out.append("another batch size")
            if published.student != config["student"] or (
                    published.teacher and published.teacher != config.get("teacher")):
                out.append("stand-in backbones")
    return out


def detection_headline(frame: pd.DataFrame) -> tuple[str, bool]:
    """What the COCO runs are, in one line, and whether they are in the paper's setting."""
    found = sorted({d for ds in frame["departures"] for d in ds})
    if found:
        return ("MS-COCO runs NOT in the paper's setting (" + "; ".join(found) + ") — their APs "
                "are not the paper's COCO results"), False
    return "MS-COCO runs with the published recipes", True


def detection_banner_html(frame: pd.DataFrame) -> str:
    """One line above the report when it holds COCO runs: the paper's setting or not."""
    if frame.empty:
        return ""
    text, full = detection_headline(frame)
    cls = "ckd-banner ckd-full" if full else "ckd-banner"
    return (CSS + f'<div class="ckd-report"><div class="{cls}" role="alert">'
            f'<div class="ckd-headline">{escape(text)}</div></div></div>')


@dataclass
class DetectionCell:
    runs: pd.DataFrame

    def stat(self, column: str) -> tuple[float, float, int]:
        values = [v for v in self.runs[column] if v is not None and not _nan(v)]
        if not values:
            return math.nan, math.nan, 0
        series = pd.Series(values, dtype=float)
        return float(series.mean()), float(series.std()) if len(values) > 1 else math.nan, \
            len(values)


@dataclass
class DetectionRow:
    kind: str
    teacher: str | None
    student: str
    cells: dict[str, DetectionCell] = field(default_factory=dict)
    teacher_ap: list[float] = field(default_factory=list)


@dataclass
class DetectionTable:
    rows: list[DetectionRow]
    methods: list[str]


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def detection_table(frame: pd.DataFrame) -> DetectionTable:
    """Group the runs into pair rows; the baseline of a student appears in each of its pairs."""
    if frame.empty:
        return DetectionTable([], [])
    students = frame[frame["label"] != "coco teacher"]
    distilled = students[students["method"] != "baseline"]
    pairs = sorted({(r.kind, r.teacher, r.student) for r in distilled.itertuples()},
                   key=lambda p: (p[0], p[1] or "", p[2]))
    baselines = students[students["method"] == "baseline"]
    # a student trained alone with no distillation partner still gets a row
    pairs += sorted({(r.kind, None, r.student) for r in baselines.itertuples()
                     if not any(p[0] == r.kind and p[2] == r.student for p in pairs)})
    rows = []
    for kind, teacher, student in pairs:
        row = DetectionRow(kind, teacher, student)
        base = baselines[(baselines["kind"] == kind) & (baselines["student"] == student)]
        if not base.empty:
            row.cells["baseline"] = DetectionCell(base)
        mine = distilled[(distilled["kind"] == kind) & (distilled["teacher"] == teacher)
                         & (distilled["student"] == student)]
        for method, runs in mine.groupby("method"):
            row.cells[method] = DetectionCell(runs)
        row.teacher_ap = sorted({v for v in mine["teacher_AP"] if v is not None and not _nan(v)})
        rows.append(row)
    methods = sort_methods(m for r in rows for m in r.cells)
    return DetectionTable(rows, methods)


def _num(value: float) -> str:
    return "–" if value is None or _nan(value) else f"{value:.2f}"


def _cell_html(cell: DetectionCell | None, masks: bool) -> str:
    if cell is None:
        return '<td class="ckd-empty">–</td>'
    mean, std, n = cell.stat("AP")
    text = f"<b>{_num(mean)}</b>" + (f" ± {_num(std)}" if not _nan(std) else "") + f" (n={n})"
    details = " · ".join(f"{m} {_num(cell.stat(m)[0])}" for m in METRIC_NAMES[1:])
    html = f'{text}<div class="ckd-s">{escape(details)}</div>'
    if masks:
        html += f'<div class="ckd-s">mask AP {_num(cell.stat("mask_AP")[0])}</div>'
    iterations = sorted(set(int(i) for i in cell.runs["iterations"]))
    html += f'<div class="ckd-s">{", ".join(f"{i:,}" for i in iterations)} iterations</div>'
    links = " ".join(f'<a class="ckd-run" href="{escape(r.link)}" title="{escape(r.run_id)}">'
                     f"s{r.seed}</a>" for r in cell.runs.itertuples())
    return f'<td>{html}<div class="ckd-r">runs: {links}</div></td>'


def detection_html(table: DetectionTable, level: int = 2, profile: str | None = None,
                   frame: pd.DataFrame | None = None) -> str:
    """The table; with ``frame`` also where its runs come from, with ``profile`` how to remake
    it."""
    title = f'<h{level} class="ckd-h">MS-COCO detection (box AP, val)</h{level}>'
    if not table.rows:
        return (title + '<div class="ckd-note">No COCO runs in this profile. Run the COCO '
                "notebook (<code>make coco</code> with COCO 2017 on disk, or "
                "<code>make coco-demo</code> on generated shapes).</div>")
    head = "<th>detector</th><th>pair</th><th>teacher</th>" + "".join(
        f"<th>{'student alone' if m == 'baseline' else escape(m)}</th>" for m in table.methods)
    body = []
    for row in table.rows:
        masks = row.kind == "mask_rcnn"
        pair = pair_label(SHORT.get(row.teacher, row.teacher), SHORT.get(row.student, row.student))
        teacher = ", ".join(_num(v) for v in row.teacher_ap) or "–"
        tds = [f"<td>{'Mask' if masks else 'Faster'} R-CNN FPN</td>",
               f'<td class="ckd-pair">{escape(pair)}</td>', f"<td>{escape(teacher)}</td>"]
        tds += [_cell_html(row.cells.get(m), masks) for m in table.methods]
        body.append("<tr>" + "".join(tds) + "</tr>")
    note = ('<div class="ckd-note">Box AP (COCO, IoU 0.50:0.95) of the last iteration, mean ± '
            "std over seeds and n; then AP50, AP75 and AP for small, medium and large objects "
            "(means). The teacher column is the teacher's own AP on the same images, measured "
            "by the engine. Links open each run's record.</div>")
    html = (title + note + f'<table class="ckd"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
    if frame is not None and not frame.empty:
        commits = sorted({f"{c}{' (dirty)' if d else ''}" for c, d
                          in zip(frame["commit"], frame["dirty"], strict=True) if c})
        devices = sorted({str(d) for d in frame["device"] if d})
        html += (f'<div class="ckd-note">{len(frame)} COCO run records (teachers trained here '
                 f"included) under {escape(profile or '')}/detection; code "
                 f"{escape(', '.join(commits) or 'unknown')}; devices "
                 f"{escape(', '.join(devices) or 'unknown')}.</div>")
    if profile:
        make = {"coco": "make coco", "coco_demo": "make coco-demo"}.get(
            profile, f"make reproduce PROFILE={profile}")
        html += (f'<div class="ckd-note">Made by: {escape(make)} or python -m ckd_lib.study '
                 f"--profile {escape(profile)} --only 80_coco</div>")
    return html
