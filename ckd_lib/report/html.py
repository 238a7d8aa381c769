"""HTML fragments of the report: the banner, the tables, provenance and the run index.

The notebook displays these fragments; nbconvert then turns the executed notebook into the
report. Every number printed here comes from a table cell, and every cell links to the records
of its runs (paths relative to the results folder, where ``results/report.html`` lives).
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from ckd_lib.report.collect import Study, pretty_dataset
from ckd_lib.report.literature import (
    PublishedNumber,
    SourceIndex,
    literature_for_pair,
)
from ckd_lib.report.provenance import Provenance
from ckd_lib.report.tables import Cell, PairRow, Table

CSS = """
<style>
/* "table.ckd.ckd" outranks the notebook theme's own table rules (which right-align cells). */
.ckd-report, table.ckd.ckd { font-family: system-ui, -apple-system, "Segoe UI", Roboto,
  Helvetica, Arial, sans-serif; }
.ckd-banner { border: 5px solid #b3001b; background: #fff1f1; color: #7a0012;
  padding: 16px 20px; margin: 8px 0 18px 0; border-radius: 6px; }
.ckd-banner.ckd-full { border-color: #0b6e3b; background: #effaf3; color: #064023; }
.ckd-banner .ckd-headline { font-size: 1.55em; font-weight: 800; line-height: 1.25; }
.ckd-banner .ckd-detail { font-size: 1.0em; margin-top: 8px; }
table.ckd.ckd { border-collapse: collapse; margin: 6px 0 4px 0; font-size: 12px; }
table.ckd.ckd th, table.ckd.ckd td { border: 1px solid #c8c8c8; padding: 4px 6px;
  text-align: left; vertical-align: top; line-height: 1.3; max-width: 340px; }
table.ckd.ckd th { background: #f2f4f7; }
table.ckd.ckd td.ckd-pair { font-weight: 600; white-space: nowrap; }
table.ckd.ckd .ckd-v { font-weight: 700; font-size: 13px; white-space: nowrap; }
table.ckd.ckd .ckd-s { color: #555; font-size: 11px; white-space: nowrap; }
table.ckd.ckd .ckd-r { color: #555; font-size: 11px; white-space: normal; }
table.ckd.ckd .ckd-i { color: #555; font-size: 11px; font-style: italic; white-space: normal; }
table.ckd.ckd .ckd-lit { color: #1d3a6b; font-size: 11px; }
table.ckd.ckd .ckd-paper { color: #5b2c83; font-size: 11px; }
.ckd-ns { color: #9a5b00; font-style: italic; }
table.ckd.ckd a.ckd-run { font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 10px; white-space: nowrap; }
.ckd-pos { color: #0a6b2d; font-weight: 600; }
.ckd-neg { color: #a3001a; font-weight: 600; }
.ckd-empty { color: #999; }
.ckd-warn { color: #a3001a; font-weight: 700; }
.ckd-note { color: #444; font-size: 12px; margin: 2px 0 10px 0; }
.ckd-cmd { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px;
  background: #f6f6f6; padding: 1px 4px; }
ol.ckd-sources { font-size: 11px; color: #333; margin-top: 2px; }
h2.ckd-h, h3.ckd-h { margin-top: 22px; }
</style>
"""


def _num(value: float, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _delta_span(value: float | None, err: float | None = None) -> str:
    if value is None or math.isnan(value):
        return '<span class="ckd-empty">–</span>'
    cls = "ckd-pos" if value > 0 else "ckd-neg" if value < 0 else ""
    text = _num(value, sign=True)
    if err is not None and not math.isnan(err):
        text += f" ± {err:.2f}"
    return f'<span class="{cls}">{escape(text)}</span>'


def _links(rids, links) -> str:
    out = []
    for rid, link in zip(rids, links, strict=True):
        short = "-".join(rid.split("-")[-2:])
        out.append(f'<a class="ckd-run" href="{escape(link)}" title="{escape(rid)}">'
                   f"{escape(short)}</a>")
    return " ".join(out)


def _run_links(cell: Cell) -> str:
    if cell.runs.empty:
        return ""
    html = '<div class="ckd-r">runs: ' + _links(cell.run_ids, cell.links) + "</div>"
    if not cell.duplicates.empty:
        html += ('<div class="ckd-r">not counted: ' + _links(cell.duplicates["run_id"],
                                                             cell.duplicates["link"]) + "</div>")
    return html


def _short_basis(basis: str) -> str:
    return {"best epoch": "best", "last epoch": "last"}.get(basis, "basis?")


def _published(cell: Cell, sources: SourceIndex, paper: bool = True) -> str:
    parts = []
    if cell.literature:
        items = [f"{p.top1:.2f} <i>({_short_basis(p.basis)})</i>"
                 f"<sup>[{sources.ref(p.source)}]</sup>" for p in cell.literature]
        parts.append('<div class="ckd-lit">lit.: ' + ", ".join(items) + "</div>")
    if paper:
        if isinstance(cell.paper, PublishedNumber):
            ref = sources.ref(f"CKD paper (user-supplied paper_numbers.csv): {cell.paper.source}")
            parts.append(f'<div class="ckd-paper">paper: {cell.paper.top1:.2f}<sup>[{ref}]</sup>'
                         "</div>")
        else:
            parts.append(f'<div class="ckd-paper ckd-ns">paper: {escape(str(cell.paper))}</div>')
    return "".join(parts)


def _stats_lines(cell: Cell) -> str:
    best, last = cell.best, cell.last
    epochs = "/".join(str(e) for e in cell.best_epochs)
    return (f'<div class="ckd-v">{escape(best.text())}</div>'
            f'<div class="ckd-s">last {escape(last.text())} · n={best.n}</div>'
            f'<div class="ckd-s">top-5 last {escape(cell.top5.text())}</div>'
            f'<div class="ckd-s">best ep {escape(epochs)} · {escape(cell.budget)}</div>')


def cell_html(cell: Cell | None, sources: SourceIndex) -> str:
    if cell is None:
        return '<td class="ckd-empty">no runs</td>'
    if cell.method == "teacher":
        return teacher_cell_html(cell, sources)
    note = f'<div class="ckd-i">{escape(cell.note)}</div>' if cell.note else ""
    return (f"<td>{_stats_lines(cell)}{_run_links(cell)}{_published(cell, sources)}{note}</td>")


def teacher_cell_html(cell: Cell, sources: SourceIndex) -> str:
    parts = []
    if cell.evaluated is not None and cell.evaluated.n:
        parts.append(f'<div class="ckd-v">{escape(cell.evaluated.text())}</div>'
                     f'<div class="ckd-s">evaluated checkpoint(s): {cell.evaluated.n}</div>')
    if cell.best.n:
        parts.append(f'<div class="ckd-s">own run: best {escape(cell.best.text())}, '
                     f'last {escape(cell.last.text())}</div>')
    parts.append(_run_links(cell))
    if cell.note:
        parts.append(f'<div class="ckd-i">{escape(cell.note)}</div>')
    parts.append(_published(cell, sources))
    return "<td>" + "".join(parts) + "</td>"


def delta_html(cell: Cell | None, ref: str) -> str:
    if cell is None or ref not in cell.deltas:
        return '<td class="ckd-empty">–</td>'
    d = cell.deltas[ref]
    return (f'<td><div class="ckd-v">{_delta_span(d.get("best"), d.get("best_err"))}</div>'
            f'<div class="ckd-s">last {_delta_span(d.get("last"), d.get("last_err"))}</div></td>')


def sources_html(sources: SourceIndex, start: int = 0) -> str:
    items = [(n, s, b) for n, s, b in sources.items() if n > start]
    if not items:
        return ""
    lis = "".join(f'<li value="{n}">{escape(s)} <i>({escape(b)})</i></li>' for n, s, b in items)
    return f'<ol class="ckd-sources">{lis}</ol>'


def commands_html(info: dict | None) -> str:
    if not info:
        return ""
    cmds = " &nbsp;or&nbsp; ".join(f'<span class="ckd-cmd">{escape(c)}</span>'
                                   for c in info["commands"])
    how = f" <i>(notebook {escape(info['how'])})</i>" if info.get("notebooks") else ""
    return f'<div class="ckd-note">Made by: {cmds}{how}</div>'


def pair_table_html(table: Table, sources: SourceIndex, command: dict | None = None,
                    budget_column: bool = False, level: int = 3) -> str:
    """A main (or matched-budget) table: rows are pairs, columns teacher, CE, methods, deltas."""
    start = len(sources.sources)
    has_teacher = any("teacher" in row.cells for row in table.rows)
    cols = (["teacher"] if has_teacher else []) + ["CE"] + table.methods
    head = "<th>pair</th>" + ("<th>budget</th>" if budget_column else "")
    names = {"teacher": "teacher", "CE": "student alone (CE)"}
    head += "".join(f"<th>{escape(names.get(c, c))}</th>" for c in cols)
    refs = [r for r in ("teacher", "CE", "KD") if r in cols]
    head += "".join(f"<th>Δ CKD − {escape(r)}</th>" for r in refs)
    body = []
    for row in table.rows:
        assert isinstance(row, PairRow)
        tds = [f'<td class="ckd-pair">{escape(row.teacher)} → {escape(row.student)}</td>']
        if budget_column:
            tds.append(f'<td class="ckd-s">{escape(row.budget)}</td>')
        tds += [cell_html(row.cells.get(c), sources) for c in cols]
        ckd = row.cells.get("CKD")
        tds += [delta_html(ckd, r) for r in refs]
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f'<div class="ckd-note">{escape(n)}</div>' for n in table.notes)
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)} Each cell: best-epoch top-1 '
            "mean ± std over seeds (bold), last-epoch mean ± std and n, the best epochs, the "
            "runs (links to their records), the published numbers (lit.) and the CKD paper's "
            "own number.</div>"
            f'<table class="ckd"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table>{notes}{sources_html(sources, start)}{commands_html(command)}")


def ablations_html(table: Table, sources: SourceIndex, command: dict | None = None,
                   level: int = 2) -> str:
    start = len(sources.sources)
    if not table.rows:
        body = '<tr><td colspan="9" class="ckd-empty">no ablation runs in these records</td></tr>'
    else:
        body = ""
        for c in table.rows:
            d = c.deltas.get("main", {})
            body += (f"<tr><td>{escape(pretty_dataset(c.dataset))}</td>"
                     f'<td class="ckd-pair">{escape(c.teacher or "none")} → '
                     f"{escape(c.student)}</td><td>{escape(c.method)}</td>"
                     f"<td>{escape(c.label)}</td><td class=\"ckd-s\">{escape(c.settings)}</td>"
                     f"<td>{_stats_lines(c)}{_run_links(c)}{_published(c, sources, False)}</td>"
                     f"<td>{_delta_span(d.get('best'))}"
                     f"<div class=\"ckd-s\">last {_delta_span(d.get('last'))}</div>"
                     + (f'<div class="ckd-i">{escape(c.note)}</div>' if c.note else "")
                     + "</td></tr>")
    head = ("<th>dataset</th><th>pair</th><th>method</th><th>label</th><th>settings</th>"
            "<th>top-1 (best; last, n)</th><th>Δ main</th>")
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)}</div>'
            f'<table class="ckd"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"{sources_html(sources, start)}{commands_html(command)}")


def teachers_html(table: Table, sources: SourceIndex, command: dict | None = None,
                  level: int = 2) -> str:
    start = len(sources.sources)
    body = ""
    for c in table.rows:
        ckpts = sorted({str(x) for x in c.runs.get("teacher_checkpoint", [])} - {"None", "nan"})
        stored = sorted({f"{x:.2f}" for x in c.runs.get("teacher_stored_accuracy", [])
                         if isinstance(x, (int, float)) and not math.isnan(x)})
        body += (f"<tr><td>{escape(pretty_dataset(c.dataset))}</td>"
                 f'<td class="ckd-pair">{escape(c.teacher or c.student)}</td>'
                 f"{teacher_cell_html(c, sources)}"
                 f"<td class=\"ckd-s\">{escape(', '.join(stored) or '–')}</td>"
                 f"<td class=\"ckd-s\">{escape(c.settings or ', '.join(ckpts))}</td></tr>")
    if not body:
        body = '<tr><td colspan="5" class="ckd-empty">no teachers in these records</td></tr>'
    head = ("<th>dataset</th><th>teacher</th><th>top-1 (measured by the runs; own run)</th>"
            "<th>stored in checkpoint</th><th>checkpoint / settings</th>")
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)}</div>'
            f'<table class="ckd"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"{sources_html(sources, start)}{commands_html(command)}")


def literature_html(study: Study, tables: list[Table], sources: SourceIndex) -> str:
    """All published numbers of the pairs in the main tables (every method, with sources)."""
    start = len(sources.sources)
    rows = []
    seen = set()
    for table in tables:
        for row in table.rows:
            key = (row.dataset, row.teacher, row.student)
            if key in seen:
                continue
            seen.add(key)
            hits = literature_for_pair(study.literature, *key)
            if not hits:
                continue
            items = ", ".join(f"{escape(h['method'])} {h['top1']:.2f}"
                              f"<sup>[{sources.ref(h['source'])}]</sup>" for h in hits)
            rows.append(f'<tr><td class="ckd-pair">{escape(row.teacher)} → '
                        f"{escape(row.student)}</td><td class=\"ckd-lit\">{items}</td></tr>")
    if not rows:
        datasets = ", ".join(sorted({pretty_dataset(t.dataset) for t in tables})) or "these runs"
        return (f'<div class="ckd-note">literature.csv holds no published numbers for the pairs '
                f"of {escape(datasets)}.</div>")
    return (f'<table class="ckd"><thead><tr><th>pair</th><th>published top-1 by method</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>{sources_html(sources, start)}')


# -- banner, overview, provenance, run index -------------------------------------------------------
def _published_epochs(cfg: dict) -> int | None:
    """The epochs the published recipe of a run's cell trains (CE: the student's or teacher's
    own recipe), or None when the recipes have no such cell."""
    from ckd_lib.recipes import all_recipes

    dataset = cfg["dataset"]
    if cfg["method"] == "CE":
        hits = [r.epochs for r in all_recipes() if r.dataset == dataset and r.epochs
                and r.student == cfg["student"] and r.method in ("CE", "teacher")]
    else:
        hits = [r.epochs for r in all_recipes() if r.dataset == dataset and r.epochs
                and r.teacher == cfg.get("teacher") and r.student == cfg["student"]
                and r.method == cfg["method"]]
    return max(hits) if hits else None


def banner(study: Study) -> tuple[str, str, bool]:
    """The headline that states what these numbers are, its detail line, and whether the records
    are full CIFAR-100 recipes (only then is the banner not a warning)."""
    profile = study.profile.upper()
    frame = study.frame
    paper_state = ("the CKD paper's own numbers are shown from " + str(study.paper.path)
                   if study.paper.supplied else
                   "the CKD paper's own numbers: not supplied (add results/paper_numbers.csv)")
    if frame.empty:
        return (f"{profile}: no complete run records under {study.runs_dir} — this report holds "
                "no results", paper_state, False)
    datasets = sorted(set(frame["dataset"]))
    pretty = ", ".join(pretty_dataset(d) for d in datasets)
    shortened = False
    subset = False
    sections = dict(zip(frame["run_id"], frame["section"], strict=True))
    for r in study.records:
        cfg = r["config"]
        if cfg.get("train_subset") or cfg.get("test_subset"):
            subset = True
        if sections.get(r["run_id"]) not in ("main", "teacher"):
            continue  # matched-budget runs are meant to differ from their recipe
        published = _published_epochs(cfg)
        if published and cfg["epochs"] < published:
            shortened = True
    distill = frame[frame["method"] != "CE"]
    epochs = sorted(set(int(e) for e in frame["epochs"]))
    span = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
    non_cifar = datasets != ["cifar100"]
    from ckd_lib.recipes import all_recipes

    paper_epochs = sorted({r.epochs for r in all_recipes() if r.dataset == "cifar100"
                           and r.epochs and r.method != "teacher"})
    if non_cifar and paper_epochs and max(epochs) < min(paper_epochs):
        shortened = True
    seeds = sorted(set(distill["seed"] if not distill.empty else frame["seed"]))
    untrained = sorted({str(t) for t, c in zip(frame["teacher"], frame["teacher_checkpoint"],
                                                strict=True) if c == "untrained"})
    detail = (f"{len(frame)} runs from results/{study.profile}/runs; seeds {seeds}; "
              f"{span} epochs (the published CIFAR-100 recipes: "
              f"{' or '.join(str(e) for e in paper_epochs)}); "
              f"{paper_state}.")
    if untrained:
        detail += (f" UNTRAINED teacher(s) {', '.join(untrained)}: random weights, "
                   "for tests and benchmarks only.")
    from ckd_lib.recipes import pairs as recipe_pairs

    paper_pairs = set(recipe_pairs("cifar100"))
    other_pairs = sorted({f"{t}→{s}" for t, s in zip(distill["teacher"], distill["student"],
                                                      strict=True) if (t, s) not in paper_pairs})
    if other_pairs:
        detail += (" Pairs not in the paper's CIFAR-100 tables (stand-in models): "
                   f"{', '.join(other_pairs)}.")
    if not non_cifar and not shortened and not subset and not untrained and not other_pairs:
        headline = (f"{profile} profile: CIFAR-100 with the published recipes, "
                    f"{len(seeds)} seed(s) — numbers reproduced by this study, not copied from "
                    "the paper")
        return headline, detail, True
    what = "shortened schedules" if shortened else "the study's own settings"
    if subset:
        what += " on data subsets"
    headline = (f"{profile} on {pretty} with {what} — these are NOT the paper's CIFAR-100 "
                "numbers")
    return headline, detail, False


def banner_html(study: Study) -> str:
    headline, detail, full = banner(study)
    cls = "ckd-banner ckd-full" if full else "ckd-banner"
    return (CSS + f'<div class="ckd-report"><div class="{cls}" id="ckd-banner" role="alert">'
            f'<div class="ckd-headline">{escape(headline)}</div>'
            f'<div class="ckd-detail">{escape(detail)}</div></div></div>')


def overview_html(study: Study, tables) -> str:
    frame = study.frame
    if frame.empty:
        return '<div class="ckd-note">No complete records: run the study first.</div>'
    pairs = {(t, s) for t, s in zip(frame["teacher"], frame["student"], strict=True) if t}
    methods = sorted(set(frame["method"]))
    return ('<div class="ckd-report ckd-note">'
            f"<b>{len(frame)}</b> complete runs of profile <b>{escape(study.profile)}</b>: "
            f"{len(pairs)} teacher→student pair(s), methods {escape(', '.join(methods))}. "
            "<b>best</b> is the highest test top-1 over the epochs of a run (mdistiller reports "
            "this, mean of 5 runs); <b>last</b> is the top-1 after the last epoch (RepDistiller "
            "reports this). mean ± std are over seeds, std the sample standard deviation "
            "(ddof=1); n is the number of seeds. Published numbers (lit.) come from the project's "
            "literature.csv, each with its source and its epoch basis; <b>paper</b> is the CKD "
            "paper's own number from results/paper_numbers.csv when a user supplies it. "
            "summary.csv beside this report has one row per table cell.</div>")


def provenance_html(prov: Provenance, commands: dict[str, dict], tables: list[Table]) -> str:
    def table(rows: list[dict]) -> str:
        if not rows:
            return '<div class="ckd-note">none</div>'
        keys = list(rows[0])
        head = "".join(f"<th>{escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(r[k]))}</td>" for k in keys) + "</tr>"
                       for r in rows)
        return f'<table class="ckd"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    dirty = ('<div class="ckd-note ckd-neg"><b>Some runs come from a working tree with '
             "uncommitted changes (dirty = True).</b></div>" if prov.any_dirty else "")
    cmd_rows = []
    for t in tables:
        info = commands.get(t.key)
        if not info:
            continue
        cmd_rows.append({"table": t.title, "notebooks": ", ".join(info["notebooks"]) or "–",
                         "found": info["how"], "commands": " | ".join(info["commands"])})
    if "report" in commands:
        cmd_rows.append({"table": "this report", "notebooks": "90_report", "found": "",
                         "commands": " | ".join(commands["report"]["commands"])})
    return ('<div class="ckd-report">'
            f'<div class="ckd-note">Profile <b>{escape(prov.profile)}</b>; {prov.n_records} '
            f"records; datasets {escape(', '.join(prov.datasets) or '–')}; record files written "
            f"{escape(prov.first_written or '–')} to {escape(prov.last_written or '–')}.</div>"
            f"<h4>Code (commit and dirty flag, from each record)</h4>{table(prov.commits)}{dirty}"
            f"<h4>Software</h4>{table(prov.versions)}"
            f"<h4>Devices</h4>{table(prov.devices)}"
            f"<h4>Commands that make each table</h4>{table(cmd_rows)}</div>")


def run_index_html(study: Study) -> str:
    frame = study.frame
    if frame.empty:
        return ""
    rows = []
    for r in frame.sort_values(["dataset", "teacher", "student", "method", "label",
                                "seed"], na_position="first").itertuples():
        spi = (f"{1000 * r.seconds_per_iteration:.1f}" if r.seconds_per_iteration
               and not math.isnan(r.seconds_per_iteration) else "–")
        rows.append(
            f'<tr><td><a class="ckd-run" href="{escape(r.link)}">{escape(r.run_id)}</a></td>'
            f"<td>{escape(str(r.section))}</td><td>{escape(r.label)}</td>"
            f"<td>{escape(r.settings)}</td><td>{r.seed}</td>"
            f"<td>{_num(r.best_top1)} (ep {r.best_epoch})</td><td>{_num(r.last_top1)}</td>"
            f"<td>{spi}</td></tr>")
    return ('<details class="ckd-report"><summary>All '
            f"{len(frame)} runs (each links to its record)</summary>"
            '<table class="ckd"><thead><tr><th>run id</th><th>section</th><th>label</th>'
            "<th>settings</th><th>seed</th><th>best top-1</th><th>last top-1</th>"
            "<th>ms / iteration</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></details>")


# -- artifacts ----------------------------------------------------------------------------------
ARTIFACT_GROUPS = {
    "correlation": ("corr",),
    "tsne": ("tsne", "t-sne", "t_sne"),
    "efficiency": ("effic", "speed", "timing", "memory"),
    "environment": ("environment",),
}


def artifact_files(study: Study, group: str, suffix: str) -> list[Path]:
    """Artifacts of one group (by file name) with the given suffix, sorted by name."""
    if not study.artifacts_dir.is_dir():
        return []
    words = ARTIFACT_GROUPS.get(group)
    files = sorted(study.artifacts_dir.glob(f"*{suffix}"))
    if words is None:  # everything no group claims
        claimed = [w for ws in ARTIFACT_GROUPS.values() for w in ws]
        return [f for f in files if not any(w in f.name.lower() for w in claimed)]
    return [f for f in files if any(w in f.name.lower() for w in words)]


def artifact_caption(study: Study, path: Path) -> str:
    from ckd_lib.report.collect import relative_path

    link = relative_path(path, study.results_dir)
    return (f'<div class="ckd-note">Artifact <a href="{escape(link)}">{escape(link)}</a> '
            "(written by the study's notebooks)</div>")


def missing_artifact_note(study: Study, what: str) -> str:
    return (f'<div class="ckd-note ckd-ns">No {escape(what)} artifact under '
            f"{escape(str(study.artifacts_dir))}: the notebook that draws it has not run for "
            f"profile {escape(study.profile)}.</div>")


def artifact_html(study: Study, path: Path) -> str:
    """The caption of an artifact figure: its JSON sibling's contents when there is one."""
    sibling = path.with_suffix(".json")
    if path.suffix != ".json" and sibling.is_file():
        return json_artifact_html(study, sibling).replace(
            "Artifact ", f"Artifact {escape(path.name)} with its data ", 1)
    return json_artifact_html(study, path) if path.suffix == ".json" else \
        artifact_caption(study, path)


def _flat_rows(value) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)
            and all(not isinstance(v, (dict, list)) for r in value for v in r.values()))


def _rows_table(rows: list[dict], limit: int = 200) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))[:20]
    head = "".join(f"<th>{escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt_value(r.get(k)))}</td>" for k in keys)
                   + "</tr>" for r in rows[:limit])
    more = (f'<div class="ckd-note">… {len(rows) - limit} more rows in the file</div>'
            if len(rows) > limit else "")
    return f'<table class="ckd"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def _run_ids_in(value) -> list[tuple[str, str]]:
    """(name, run id) pairs of an artifact's "runs" entry: {name: run_id} or [{run_id: ...}]."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items() if isinstance(v, str)]
    if isinstance(value, list):
        return [(str(r.get("row", r.get("name", ""))) + (f" s{r['seed']}" if "seed" in r else ""),
                 r["run_id"]) for r in value if isinstance(r, dict) and
                isinstance(r.get("run_id"), str)]
    return []


def json_artifact_html(study: Study, path: Path) -> str:
    """A JSON artifact: its scalar fields on one line, each list of flat objects as a table, and
    its "runs" as links to their records; anything else stays in the file (linked)."""
    from ckd_lib.report.collect import relative_path

    caption = artifact_caption(study, path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return caption + f'<div class="ckd-note ckd-ns">unreadable: {escape(str(exc))}</div>'
    if _flat_rows(data):
        return caption + _rows_table(data)
    if not isinstance(data, dict):
        return caption
    parts = [caption]
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if scalars:
        parts.append('<div class="ckd-note">' + "; ".join(
            f"{escape(str(k))}: <b>{escape(_fmt_value(v))}</b>" for k, v in scalars.items())
            + "</div>")
    for key, value in data.items():
        if key != "runs" and _flat_rows(value):
            parts.append(f'<div class="ckd-note">{escape(key)}</div>{_rows_table(value)}')
    runs = _run_ids_in(data.get("runs"))
    if runs:
        links = []
        for name, rid in runs:
            record = study.by_id.get(rid)
            if record is not None and record.get("_path"):
                link = relative_path(record["_path"], study.results_dir)
                links.append(f'{escape(name)}: <a class="ckd-run" href="{escape(link)}">'
                             f"{escape(rid)}</a>")
            else:
                links.append(f"{escape(name)}: {escape(rid)} <i>(no complete record)</i>")
        parts.append('<div class="ckd-note">runs: ' + "; ".join(links) + "</div>")
    return "".join(parts)


def _fmt_value(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

