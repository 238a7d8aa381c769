"""HTML fragments of the report: the banner, the tables, provenance and the run index.

The notebook displays these fragments; nbconvert then turns the executed notebook into the
report. Every number printed here comes from a table cell, and every cell links to the records
of its runs (paths relative to ``results/<profile>/``, where the report lives). Pairs are named
and methods ordered by ``ckd_lib.report.palette``; the stylesheet is ``ckd_lib.report.style``.
"""

from __future__ import annotations

import math
from html import escape

from ckd_lib.rehearsal import is_rehearsal
from ckd_lib.report.collect import SETTINGS_SEPARATOR, Study, pretty_dataset
from ckd_lib.report.literature import PublishedNumber, SourceIndex, literature_for_pair
from ckd_lib.report.palette import method_color, pair_label
from ckd_lib.report.provenance import Provenance
from ckd_lib.report.stats import Interval
from ckd_lib.report.style import CSS
from ckd_lib.report.tables import Cell, Delta, PairRow, Table, equal_budget_deltas

__all__ = ["CSS", "ablations_html", "banner", "banner_html", "cell_html", "delta_html",
           "literature_html", "overview_html", "pair_table_html", "provenance_html",
           "run_index_html", "section_html", "table_html", "teachers_html"]


def _num(value: float, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def num_html(text: str) -> str:
    """A number (or "mean ± std") that never breaks across lines."""
    return f'<span class="ckd-n">{escape(text)}</span>'


def pair_html(teacher: str | None, student: str) -> str:
    """A pair's name (``palette.pair_label``) with each model name kept on one line."""
    return pair_label(teacher, student, name=num_html)


def table_html(head: str, body: str, cls: str = "ckd") -> str:
    """A table in a box that scrolls sideways when the table is wider than the page."""
    return (f'<div class="ckd-scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def method_name_html(method: str) -> str:
    """A method's name with its colour swatch, the colour it has in every figure."""
    first, _, rest = {"CE": "student alone (CE)"}.get(method, method).partition(" ")
    return (f'<span class="ckd-n"><span class="ckd-swatch" '
            f'style="background:{method_color(method)}"></span>{escape(first)}</span>'
            + (f" {escape(rest)}" if rest else ""))


def _delta_span(diff: Interval | None, colour: bool = True) -> str:
    """A difference with its 95 % interval; coloured only when the interval excludes 0 and
    ``colour`` (the caller says whether the two sides trained at an equal budget)."""
    if diff is None or not diff.n:
        return '<span class="ckd-empty">–</span>'
    cls = ""
    if colour and diff.excludes_zero:
        cls = "ckd-pos" if diff.mean > 0 else "ckd-neg"
    return f'<span class="ckd-n {cls}">{escape(diff.text())}</span>'


def links_html(rids, links) -> str:
    out = []
    for rid, link in zip(rids, links, strict=True):
        short = "-".join(rid.split("-")[-2:])
        out.append(f'<a class="ckd-run" href="{escape(link)}" title="{escape(rid)}">'
                   f"{escape(short)}</a>")
    return " ".join(out)


def _run_links(cell: Cell) -> str:
    if cell.runs.empty:
        return ""
    html = '<div class="ckd-r">runs: ' + links_html(cell.run_ids, cell.links) + "</div>"
    if not cell.duplicates.empty:
        html += ('<div class="ckd-r">not counted: ' + links_html(cell.duplicates["run_id"],
                                                             cell.duplicates["link"]) + "</div>")
    return html


def _short_basis(basis: str) -> str:
    return {"best epoch": "best", "last epoch": "last"}.get(basis, "basis?")


def _tier_html(cell: Cell, published: PublishedNumber) -> str:
    found = cell.tier(published)
    if found is None:
        return ""
    cls = {"reproduced": "ckd-pos", "differs": "ckd-neg"}.get(found.label, "ckd-ns")
    return (f' <span class="ckd-tier {cls}" title="ours − published {found.delta:+.2f}, '
            f'tolerance {found.tolerance:.2f}">{found.symbol}</span>')


def _published(cell: Cell, sources: SourceIndex, paper: bool = True) -> str:
    parts = []
    if cell.literature:
        items = [f"{num_html(f'{p.top1:.2f}')} <i>({_short_basis(p.basis)})</i>"
                 f"<sup>[{sources.ref(p.source)}]</sup>{_tier_html(cell, p)}"
                 for p in cell.literature]
        parts.append('<div class="ckd-lit">lit.: ' + ", ".join(items) + "</div>")
    if paper:
        if isinstance(cell.paper, PublishedNumber):
            ref = sources.ref(f"CKD paper (user-supplied paper_numbers.csv): {cell.paper.source}")
            parts.append(f'<div class="ckd-paper">paper: {cell.paper.top1:.2f}<sup>[{ref}]</sup>'
                         f"{_tier_html(cell, cell.paper)}</div>")
        else:
            parts.append(f'<div class="ckd-paper ckd-ns">paper: {escape(str(cell.paper))}</div>')
    return "".join(parts)


def _per_seed(cell: Cell) -> str:
    """Every seed's best/last top-1, so a reader sees the spread behind a mean."""
    best, last = cell.per_seed("best"), cell.per_seed("last")
    if not best:
        return ""
    items = " · ".join(num_html(f"s{s} {best[s]:.1f}/{last[s]:.1f}") for s in sorted(best))
    return f'<div class="ckd-s">per seed best/last: {items}</div>'


def _stats_lines(cell: Cell, budget: bool = True) -> str:
    """Best-epoch mean ± sd (bold; selected on the test set), last-epoch mean ± sd (unbiased)
    and n, each seed's values, top-5, the best epochs and (unless the table says it elsewhere)
    the budget: schedule, batch, optimizer steps and images."""
    best, last = cell.best, cell.last
    epochs = f"best at ep {escape('/'.join(str(e) for e in cell.best_epochs))}"
    pieces = " · ".join(num_html(p) for p in cell.budget.parts())
    trained = (f'<div class="ckd-s">{epochs} · {pieces}</div>' if budget
               else f'<div class="ckd-s">{epochs}</div>')
    return (f'<div class="ckd-v">{num_html("best " + best.text())}</div>'
            f'<div class="ckd-s">{num_html("last " + last.text())} · n={best.n}</div>'
            f"{_per_seed(cell)}"
            f'<div class="ckd-s">top-5 {num_html("last " + cell.top5.text())}</div>{trained}')


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
        parts.append(f'<div class="ckd-v">{num_html(cell.evaluated.text())}</div>'
                     f'<div class="ckd-s">evaluated checkpoint(s): {cell.evaluated.n}</div>')
    if cell.best.n:
        parts.append(f'<div class="ckd-s">own run: best {num_html(cell.best.text())}, '
                     f'last {num_html(cell.last.text())}</div>')
    parts.append(_run_links(cell))
    if cell.note:
        parts.append(f'<div class="ckd-i">{escape(cell.note)}</div>')
    parts.append(_published(cell, sources))
    return "<td>" + "".join(parts) + "</td>"


def _delta_lines(d: Delta) -> str:
    """Last-epoch difference (bold: the unbiased one), best-epoch below, coloured only at an
    equal budget with an interval that excludes 0."""
    equal = d.equal_budget is not False
    return (f'<div class="ckd-v">last {_delta_span(d.last, equal)}</div>'
            f'<div class="ckd-s">best {_delta_span(d.best, equal)}</div>')


def delta_html(row: PairRow, method: str, ref: str) -> str:
    """The difference of `method` to `ref` in one row, seed-paired with its 95 % interval. Where
    the two trained at different budgets (optimizer steps and images), the cell says so first
    and leads with the difference at an equal budget where the matched-budget runs hold one."""
    cell = row.cells.get(method)
    if cell is None or ref not in cell.deltas:
        return '<td class="ckd-empty">–</td>'
    d = cell.deltas[ref]
    if d.equal_budget is not False:
        words = f'<div class="ckd-s">{escape(d.words)}</div>' if d.words else ""
        return f"<td>{_delta_lines(d)}{words}</td>"
    html = f'<div class="ckd-b ckd-warn">{escape(d.words)}</div>'
    matched = equal_budget_deltas(row, method, ref)
    for budget, md in matched:
        html += (f'<div class="ckd-s">at equal budget ({num_html(budget.steps_text())}, '
                 f"{escape(budget.schedule_text)} bs {budget.batch_size}):</div>"
                 + _delta_lines(md))
    if not matched:
        html += '<div class="ckd-s ckd-ns">no runs at an equal budget</div>'
    html += (f'<div class="ckd-b">each at its own recipe (uncoloured):</div>'
             f"{_delta_lines(d)}")
    return f"<td>{html}</td>"


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


def section_html(title: str, level: int = 2) -> str:
    """A section heading, displayed only when the section has something to show."""
    return f'<h{level} class="ckd-h">{escape(title)}</h{level}>'


def pair_table_html(table: Table, sources: SourceIndex, command: dict | None = None,
                    budget_column: bool = False, level: int = 3) -> str:
    """A main (or matched-budget) table: rows are pairs, columns teacher, CE, methods, deltas."""
    start = len(sources.sources)
    has_teacher = any("teacher" in row.cells for row in table.rows)
    cols = (["teacher"] if has_teacher else []) + ["CE"] + table.methods
    head = "<th>pair</th>" + ("<th>budget</th>" if budget_column else "")
    head += "".join(f"<th>{method_name_html(c)}</th>" for c in cols)
    refs = [r for r in ("teacher", "CE", "KD") if r in cols]
    head += "".join(f"<th>Δ CKD − {escape(r)}{'' if budget_column else ' (budgets: see cell)'}"
                    "</th>" for r in refs)
    body = []
    for row in table.rows:
        assert isinstance(row, PairRow)
        tds = [f'<td class="ckd-pair">{pair_html(row.teacher, row.student)}</td>']
        if budget_column:
            tds.append(f'<td class="ckd-s">{num_html(row.budget.steps_text())}</td>')
        tds += [cell_html(row.cells.get(c), sources) for c in cols]
        tds += [delta_html(row, "CKD", r) for r in refs]
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f'<div class="ckd-note">{escape(n)}</div>' for n in table.notes)
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)} {CELL_CAPTION}</div>'
            + table_html(head, "".join(body))
            + f"{notes}{sources_html(sources, start)}{commands_html(command)}")


CELL_CAPTION = (
    "Each cell: <b>best</b> = mean ± sd over seeds of each run's highest test top-1 over its "
    "epochs — selected on the test set, so it flatters (the number mdistiller and the CKD code "
    "report); <b>last</b> = mean ± sd of the top-1 after the last epoch, the unbiased number "
    "(RepDistiller reports it); sd is the sample standard deviation (ddof 1), n the seeds; then "
    "each seed's best/last, the best epochs, the budget (schedule, batch, optimizer steps, "
    "images seen), the runs (links to their records), the published numbers with their tier "
    "(✓ reproduced, ≈ close, ✗ differs; the rule is above the tables) and the "
    "CKD paper's own number. Δ = seed-paired difference, mean [95 % t interval] over the common "
    "seeds, last epoch in bold; coloured only when both sides trained at an equal budget and "
    "the interval excludes 0. A Δ across unequal budgets says so first and leads with the "
    "difference at an equal budget where the matched-budget runs hold one.")


def shared_settings(cells: list[Cell]) -> list[str]:
    """The parts of the settings every one of `cells` has (said once above a table instead of
    in every row)."""
    parts = [c.settings.split(SETTINGS_SEPARATOR) for c in cells if c.settings]
    if len(parts) < 2 or len(parts) < len(cells):
        return []
    return [p for p in parts[0] if all(p in other for other in parts[1:])]


def _groups(cells: list[Cell]) -> list[int]:
    """For each row, how many rows its (dataset, pair) group spans from it (0: not its first)."""
    keys = [(c.dataset, c.teacher, c.student) for c in cells]
    spans = []
    for i, key in enumerate(keys):
        if i and keys[i - 1] == key:
            spans.append(0)
            continue
        n = 1
        while i + n < len(keys) and keys[i + n] == key:
            n += 1
        spans.append(n)
    return spans


def ablations_html(table: Table, sources: SourceIndex, command: dict | None = None,
                   level: int = 2) -> str:
    """One row per configuration; dataset and pair once per group of rows, and the settings
    all rows share once above the table, so each row's settings say what it changes."""
    start = len(sources.sources)
    head = ("<th>dataset</th><th>pair</th><th>method</th><th>label</th><th>settings</th>"
            "<th>top-1 (best; last, n)</th><th>Δ main (seed-paired, 95 % CI)</th>")
    shared = shared_settings(table.rows)
    body = ""
    for c, span in zip(table.rows, _groups(table.rows), strict=True):
        d = c.deltas.get("main")
        own = SETTINGS_SEPARATOR.join(p for p in c.settings.split(SETTINGS_SEPARATOR)
                                      if p not in shared) or "the shared settings"
        group = (f'<td rowspan="{span}">{escape(pretty_dataset(c.dataset))}</td>'
                 f'<td class="ckd-pair" rowspan="{span}">{pair_html(c.teacher, c.student)}</td>'
                 if span else "")
        body += (f"<tr>{group}<td>{method_name_html(c.method)}</td><td>{escape(c.label)}</td>"
                 f'<td class="ckd-s">{escape(own)}</td>'
                 f"<td>{_stats_lines(c, budget=False)}{_run_links(c)}"
                 f"{_published(c, sources, False)}</td><td>"
                 + (_delta_lines(d) + f'<div class="ckd-s">{escape(d.words)}</div>' if d else
                    '<span class="ckd-empty">–</span>')
                 + (f'<div class="ckd-i">{escape(c.note)}</div>' if c.note else "")
                 + "</td></tr>")
    if not table.rows:
        body = '<tr><td colspan="7" class="ckd-empty">no ablation runs in these records</td></tr>'
    common = (f" Settings of every row: {escape(SETTINGS_SEPARATOR.join(shared))}; each row's "
              "settings column gives the rest." if shared else "")
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)}{common}</div>'
            + table_html(head, body) + f"{sources_html(sources, start)}{commands_html(command)}")


def _teacher_files_html(cell: Cell) -> str:
    """Each checkpoint the runs distilled from: its sha256 (first 12 hex digits; the whole in
    its title), the top-1 stored in it and the top-1 the engine measured on this test set."""
    if not cell.teacher_files:
        return '<span class="ckd-empty">–</span>'
    items = []
    for f in cell.teacher_files:
        sha = str(f.get("sha256") or "")
        stored, measured = f.get("stored"), f.get("measured")
        stored = f"{stored:.2f}" if isinstance(stored, (int, float)) and not math.isnan(stored) \
            else "–"
        measured = f"{measured:.2f}" if isinstance(measured, (int, float)) and \
            not math.isnan(measured) else "–"
        sha_html = (f'<span class="ckd-n" title="sha256 {escape(sha)}">sha256 '
                    f"{escape(sha[:12])}…</span>" if sha else "sha256 not recorded")
        items.append(f'<div class="ckd-s">{sha_html} · stored {num_html(stored)} · measured '
                     f'{num_html(measured)}<br>{escape(str(f.get("checkpoint")))}</div>')
    return "".join(items)


def teachers_html(table: Table, sources: SourceIndex, command: dict | None = None,
                  level: int = 2) -> str:
    start = len(sources.sources)
    body = ""
    for c in table.rows:
        body += (f"<tr><td>{escape(pretty_dataset(c.dataset))}</td>"
                 f'<td class="ckd-pair">{num_html(c.teacher or c.student)}</td>'
                 f"{teacher_cell_html(c, sources)}"
                 f"<td>{_teacher_files_html(c)}</td></tr>")
    if not body:
        body = '<tr><td colspan="4" class="ckd-empty">no teachers in these records</td></tr>'
    head = ("<th>dataset</th><th>teacher</th><th>top-1 (measured by the runs; own run)</th>"
            "<th>checkpoint files: sha256, stored and measured top-1, path</th>")
    return (f'<h{level} class="ckd-h">{escape(table.title)}</h{level}>'
            f'<div class="ckd-note">{escape(table.description)}</div>'
            + table_html(head, body) + f"{sources_html(sources, start)}{commands_html(command)}")


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
            items = ", ".join(f"{escape(h['method'])} {num_html(format(h['top1'], '.2f'))}"
                              f"<sup>[{sources.ref(h['source'])}]</sup>" for h in hits)
            rows.append(f'<tr><td class="ckd-pair">{pair_html(row.teacher, row.student)}</td>'
                        f'<td class="ckd-lit">{items}</td></tr>')
    if not rows:
        datasets = ", ".join(sorted({pretty_dataset(t.dataset) for t in tables})) or "these runs"
        return (f'<div class="ckd-note">literature.csv holds no published numbers for the pairs '
                f"of {escape(datasets)}.</div>")
    return (table_html("<th>pair</th><th>published top-1 by method</th>", "".join(rows))
            + sources_html(sources, start))


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


def banner_facts(study: Study) -> dict:
    """What the banner (and the reproduction summary's departures) read from the records:
    whether any run used data subsets, a schedule shorter than its published recipe, an
    untrained teacher, and whether only ImageNet-family data is present."""
    frame = study.frame
    facts = {"subset": False, "shortened": False, "untrained": [], "imagenet_only": False}
    if frame.empty:
        return facts
    sections = dict(zip(frame["run_id"], frame["section"], strict=True))
    for r in study.records:
        cfg = r["config"]
        if cfg.get("train_subset") or cfg.get("test_subset"):
            facts["subset"] = True
        if sections.get(r["run_id"]) not in ("main", "teacher"):
            continue  # matched-budget runs are meant to differ from their recipe
        published = _published_epochs(cfg)
        if published and cfg["epochs"] < published:
            facts["shortened"] = True
    from ckd_lib.recipes import all_recipes

    datasets = sorted(set(frame["dataset"]))
    epochs = sorted(set(int(e) for e in frame["epochs"]))
    paper_epochs = sorted({r.epochs for r in all_recipes() if r.dataset == "cifar100"
                           and r.epochs and r.method != "teacher"})
    if datasets != ["cifar100"] and paper_epochs and max(epochs) < min(paper_epochs):
        facts["shortened"] = True
    facts["untrained"] = sorted({str(t) for t, c in zip(frame["teacher"],
                                                          frame["teacher_checkpoint"],
                                                          strict=True) if c == "untrained"})
    from ckd_lib.data.catalog import FOLDER_DATASETS, dataset_base

    facts["imagenet_only"] = all(dataset_base(d) in FOLDER_DATASETS for d in datasets)
    facts["epochs"], facts["paper_epochs"], facts["datasets"] = epochs, paper_epochs, datasets
    return facts


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
    rehearsed = sum(map(is_rehearsal, study.records))
    if rehearsed:
        return (f"{profile}: a REHEARSAL — {rehearsed} runs of a few steps on generated data; it "
                "tests the pipeline and measures step times, its numbers mean NOTHING",
                paper_state, False)
    facts = banner_facts(study)
    datasets, epochs, paper_epochs = facts["datasets"], facts["epochs"], facts["paper_epochs"]
    pretty = ", ".join(pretty_dataset(d) for d in datasets)
    shortened, subset, untrained = facts["shortened"], facts["subset"], facts["untrained"]
    distill = frame[frame["method"] != "CE"]
    span = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
    non_cifar = datasets != ["cifar100"]
    seeds = sorted(set(distill["seed"] if not distill.empty else frame["seed"]))
    detail = (f"{len(frame)} runs from results/{study.profile}/runs; seeds {seeds}; "
              f"{span} epochs (the published CIFAR-100 recipes: "
              f"{' or '.join(str(e) for e in paper_epochs)}); "
              f"{paper_state}.")
    if untrained:
        detail += (f" UNTRAINED teacher(s) {', '.join(untrained)}: random weights, "
                   "for tests and benchmarks only.")
    from ckd_lib.recipes import pairs as recipe_pairs

    paper_pairs = set(recipe_pairs("cifar100"))
    other_pairs = sorted({pair_label(t, s) for t, s in zip(distill["teacher"], distill["student"],
                                                            strict=True)
                          if (t, s) not in paper_pairs})
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
    left_out = (f' <b class="ckd-neg">{len(study.excluded)} run(s) left out</b> (diverged, or a '
                'record its files do not support): see "Runs left out".') if study.excluded else ""
    if frame.empty:
        return ('<div class="ckd-note">No complete records: run the study first.'
                f"{left_out}</div>")
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


def _rows_html(rows: list[dict]) -> str:
    """A provenance table: one column per key, values as text."""
    if not rows:
        return '<div class="ckd-note">none</div>'
    keys = list(rows[0])
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r[k]))}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return table_html(head, body)


def _commands_cell(commands: list[str]) -> str:
    """Alternative commands, one per line: any one of them makes the table."""
    items = "".join(f'<li><span class="ckd-cmd">{escape(c)}</span></li>' for c in commands)
    return f'<td><ul class="ckd-list">{items}</ul></td>'


def _notebooks_cell(notebooks: list[str], prov: Provenance) -> str:
    if not notebooks:
        return "<td>–</td>"
    return "<td>" + ", ".join(
        f'<a href="executed/{escape(n)}.html">{escape(n)}</a>' if n in prov.executed
        else escape(n) for n in notebooks) + "</td>"


def provenance_html(prov: Provenance, commands: dict[str, dict], tables: list[Table]) -> str:
    dirty = ('<div class="ckd-note ckd-neg"><b>Some runs come from a working tree with '
             "uncommitted changes (dirty = True).</b></div>" if prov.any_dirty else "")
    rows = []
    for title, key in [(t.title, t.key) for t in tables if t.rows] + [("this report", "report")]:
        info = commands.get(key)
        if info:
            rows.append(f"<tr><td>{escape(title)}</td>{_notebooks_cell(info['notebooks'], prov)}"
                        f"<td>{escape(info['how'])}</td>{_commands_cell(info['commands'])}</tr>")
    cmd_table = table_html("<th>table</th><th>notebooks</th><th>found</th>"
                           "<th>commands (any one of them)</th>", "".join(rows))
    executed = ", ".join(f'<a href="executed/{escape(n)}.html">{escape(n)}</a>'
                         for n in prov.executed) or "none"
    return ('<div class="ckd-report">'
            f'<div class="ckd-note">Profile <b>{escape(prov.profile)}</b>; {prov.n_records} '
            f"records; datasets {escape(', '.join(prov.datasets) or '–')}; record files written "
            f"{escape(prov.first_written or '–')} to {escape(prov.last_written or '–')}. "
            f"Executed notebooks (inputs and outputs, as they ran): {executed}.</div>"
            f"<h4>Code (commit and dirty flag, from each record)</h4>{_rows_html(prov.commits)}"
            f"{dirty}<h4>Software</h4>{_rows_html(prov.versions)}"
            f"<h4>Devices</h4>{_rows_html(prov.devices)}"
            f"{_borrowed_html(tables)}"
            f"<h4>Commands that make each table</h4>{cmd_table}</div>")


def _borrowed_html(tables: list[Table]) -> str:
    """Which methods of these tables ran with a recipe borrowed from another method (they have
    no published recipe of their own: the method's registration names the lender)."""
    from ckd_lib.report.provenance import borrowed_recipes

    methods = {c.method for t in tables for row in t.rows
               for c in (row.cells.values() if hasattr(row, "cells") else [row])
               if getattr(c, "method", None)}
    lines = [f"<li><b>{escape(method)}</b> has no published recipe of its own: {escape(rule)}."
             "</li>" for method, rule in borrowed_recipes(methods).items()]
    return f"<h4>Recipes borrowed</h4><ul>{''.join(lines)}</ul>" if lines else ""


def retrain_command(path: str) -> str:
    """The one command that trains a record's run again, exactly (``--rerun``), into rerun/."""
    from ckd_lib.report.collect import relative_path
    from ckd_lib.study.paths import project_root

    where = relative_path(path, project_root()) if path else "<record.json>"
    return f"python -m ckd_lib.train --rerun {where} --set out_dir=rerun"


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
            f"<td>{num_html(f'{_num(r.best_top1)} (ep {r.best_epoch})')}</td>"
            f"<td>{num_html(_num(r.last_top1))}</td><td>{num_html(spi)}</td>"
            f'<td><span class="ckd-cmd">{escape(retrain_command(r.path))}</span></td></tr>')
    head = ("<th>run id (its record: config, history, checksums)</th><th>section</th>"
            "<th>label</th><th>settings</th><th>seed</th><th>best top-1</th><th>last top-1</th>"
            "<th>ms / iteration</th><th>retrain exactly this run</th>")
    return (f'<details class="ckd-report"><summary>All {len(frame)} runs (each links to its '
            "record, which holds its config; the command trains it again exactly)</summary>"
            f"{table_html(head, ''.join(rows))}</details>")


def excluded_html(study: Study) -> str:
    """The runs no table shows, and why: a divergence, or a record its files do not support
    (model missing or changed, history that does not give its summary). Empty when none."""
    if not study.excluded:
        return ""
    rows = "".join(
        f'<tr><td><a class="ckd-run" href="{escape(e["link"])}">{escape(e["run_id"])}</a></td>'
        f'<td>{escape(str(e["method"]))}</td><td>{escape(e["why"])}</td></tr>'
        for e in study.excluded)
    head = "<th>run id</th><th>method</th><th>why it is left out of every table</th>"
    return (section_html("Runs left out") + '<div class="ckd-report ckd-note ckd-neg">'
            f"{len(study.excluded)} run(s) of these records are in no table and no figure."
            f"</div>{table_html(head, rows)}")
