"""The artifacts other notebooks wrote (``results/<profile>/artifacts/<name>.json|png``), as the
report shows them: found by name, linked, and their data laid out for a reader.

The report draws its own figures from an artifact's JSON (``ckd_lib.report.figures``), so that
colours and pair names are the report's; the notebook's PNG stays linked. An artifact the report
has no layout for is shown generically: its scalar fields on one line, each list of flat objects
as a table (one precision per column), its "runs" as links to their records.
"""

from __future__ import annotations

import json
import math
import statistics
from html import escape
from pathlib import Path

from ckd_lib.report.collect import Study, relative_path
from ckd_lib.report.html import method_name_html, num_html, table_html
from ckd_lib.report.palette import method_rank, pair_label, sort_methods

ARTIFACT_GROUPS = {
    "correlation": ("corr",),
    "tsne": ("tsne", "t-sne", "t_sne"),
    "efficiency": ("effic", "speed", "timing", "memory"),
    "environment": ("environment",),
    "curves": ("curves",),
}
# The notebook that writes each group: a profile without it has no such section.
ARTIFACT_NOTEBOOKS = {"correlation": "60_visualisations", "tsne": "60_visualisations",
                      "curves": "60_visualisations", "efficiency": "50_efficiency",
                      "environment": "00_environment"}


def artifact_files(study: Study, group: str | None, suffix: str) -> list[Path]:
    """Artifacts of one group (by file name) with the given suffix, sorted by name; group None:
    those no group claims."""
    if not study.artifacts_dir.is_dir():
        return []
    words = ARTIFACT_GROUPS.get(group)
    files = sorted(study.artifacts_dir.glob(f"*{suffix}"))
    if words is None:
        claimed = [w for ws in ARTIFACT_GROUPS.values() for w in ws]
        return [f for f in files if not any(w in f.name.lower() for w in claimed)]
    return [f for f in files if any(w in f.name.lower() for w in words)]


def read_artifact(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def artifact_link(study: Study, path: Path) -> str:
    link = relative_path(path, study.report_dir)
    return f'<a href="{escape(link)}">{escape(link)}</a>'


def artifact_caption(study: Study, path: Path, what: str = "") -> str:
    """Where a figure or table comes from: the artifact files (data and the notebook's own
    figure) that the study's notebooks wrote."""
    files = [p for p in (path.with_suffix(".json"), path.with_suffix(".png")) if p.is_file()]
    links = " and ".join(artifact_link(study, p) for p in files) or artifact_link(study, path)
    lead = f"{escape(what)} " if what else ""
    return f'<div class="ckd-note">{lead}From {links} (written by the study\'s notebooks).</div>'


def artifact_commands_html(study: Study, group: str) -> str:
    """The commands that make an artifact's section (its notebook, on this profile)."""
    from ckd_lib.report.html import commands_html
    from ckd_lib.report.provenance import commands_for
    from ckd_lib.study.profiles import results_command_form

    notebook = ARTIFACT_NOTEBOOKS.get(group)
    if notebook is None:
        return ""
    profile = results_command_form(study.profile, study.results_dir)
    return commands_html({"commands": commands_for(profile, [notebook])[1:],
                          "notebooks": [notebook], "how": notebook})


def missing_artifact_note(study: Study, what: str) -> str:
    return (f'<div class="ckd-note ckd-ns">No {escape(what)} artifact under '
            f"{escape(str(study.artifacts_dir))}: the notebook that draws it has not run for "
            f"profile {escape(study.profile)}.</div>")


def run_links(study: Study, runs: list[tuple[str, str]]) -> str:
    """"name: run id" links to the records of an artifact's runs."""
    links = []
    for name, rid in runs:
        record = study.by_id.get(rid)
        if record is not None and record.get("_path"):
            link = relative_path(record["_path"], study.report_dir)
            links.append(f'{escape(name)}: <a class="ckd-run" href="{escape(link)}">'
                         f"{escape(rid)}</a>")
        else:
            links.append(f"{escape(name)}: {escape(rid)} <i>(no complete record)</i>")
    return '<div class="ckd-note">runs: ' + "; ".join(links) + "</div>" if links else ""


def artifact_runs(data) -> list[tuple[str, str]]:
    """(name, run id) pairs of an artifact's "runs" entry: {name: run_id} or [{run_id: ...}]."""
    value = data.get("runs") if isinstance(data, dict) else None
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items() if isinstance(v, str)]
    if isinstance(value, list):
        return [(str(r.get("row", r.get("name", ""))) + (f" s{r['seed']}" if "seed" in r else ""),
                 r["run_id"]) for r in value if isinstance(r, dict) and
                isinstance(r.get("run_id"), str)]
    return []


def artifact_pair(study: Study, data: dict) -> str:
    """The pair an artifact shows, named as everywhere in the report: from the records of its
    runs (the models actually trained), else from its rows; "" when it names none."""
    for _, rid in artifact_runs(data):
        config = (study.by_id.get(rid) or {}).get("config")
        if config and config.get("teacher"):
            return pair_label(config["teacher"], config["student"])
    for row in data.get("rows") or []:
        if isinstance(row, dict) and row.get("teacher") and row.get("student"):
            return pair_label(row["teacher"], row["student"])
    return ""


# -- numbers: one precision per column -------------------------------------------------------------
def decimals_for(values, significant: int = 3, most: int = 4) -> int:
    """Decimals that give the smallest non-zero magnitude in `values` `significant` digits (at
    most `most`), so one column of a table is printed with one precision."""
    small = [abs(v) for v in values if isinstance(v, (int, float)) and v and math.isfinite(v)]
    if not small:
        return 0
    return max(0, min(most, significant - 1 - math.floor(math.log10(min(small)))))


def format_column(values, digits: int | None = None) -> list[str]:
    """Numbers of one column as text with the same decimals; integers with thousands
    separators; None/NaN as "–"; anything else as it is."""
    numeric = [v for v in values if isinstance(v, float)]
    digits = decimals_for(numeric) if digits is None else digits
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("–")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            out.append(str(v))
        elif isinstance(v, int):
            out.append(f"{v:,}")
        else:
            out.append(f"{v:,.{digits}f}")
    return out


def columns_table(columns: list[tuple[str, list]], html_first: bool = False) -> str:
    """A table from (heading, formatted values) columns; numbers right-aligned. With
    `html_first`, the first column's values are HTML already (e.g. a method with its swatch)."""
    right = ' class="ckd-right"'
    head = "".join(f'<th{"" if i == 0 else right}>{escape(h)}</th>'
                   for i, (h, _) in enumerate(columns))
    body = []
    for r in range(len(columns[0][1]) if columns else 0):
        tds = []
        for i, (_, values) in enumerate(columns):
            value = values[r]
            if i == 0:
                tds.append(f"<td>{value if html_first else escape(value)}</td>")
            else:
                tds.append(f'<td class="ckd-right">{num_html(value)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return table_html(head, "".join(body))


# -- efficiency (notebook 50) --------------------------------------------------------------------
def _one(rows: list[dict], key: str):
    values = {r.get(key) for r in rows}
    return values.pop() if len(values) == 1 else None


def efficiency_html(study: Study, path: Path) -> str:
    """The time and memory of each method and the CKD loss alone against the batch size, with
    named columns and units, and what was measured on what."""
    data = read_artifact(path)
    if not isinstance(data, dict) or not data.get("rows"):
        return artifact_caption(study, path) + '<div class="ckd-note ckd-ns">no rows</div>'
    rows = sorted(data["rows"], key=lambda r: method_rank(r["method"]))
    threads = _one(rows, "threads")
    device = _one(rows, "device") or "several devices"
    pair = artifact_pair(study, data)
    rounds = _one(rows, "rounds")
    how = (f"interleaved: {rounds} rounds, each timing {_one(rows, 'steps') or '?'} iterations "
           "of every method in a rotated order" if rounds else
           f"{_one(rows, 'steps') or '?'} iterations per method, one method after another "
           "(measured before interleaving: a busy moment can favour one method)")
    setting = (f"Measured by notebook 50 on <b>{escape(str(device))}</b>"
               + (f" ({threads} threads)" if threads else "")
               + (f" for the pair <b>{escape(pair)}</b>" if pair else "")
               + f", {how}, after a warm-up, batch {_one(rows, 'batch_size') or '?'}, on random "
               f"inputs with {_one(rows, 'num_classes') or '?'} classes (no images of the "
               "profile's dataset: only the methods differ). Time: median of every timed "
               "iteration, and the fastest and slowest round's median (the spread); ratio to KD: "
               "median of the per-round ratios; memory: the activations autograd keeps for the "
               "backward pass (parameters excluded), and the peak allocated where the device "
               "reports it.")
    from ckd_lib.analysis.efficiency import cost_ratios, ordering_problem

    noisy = rows[0].get("noisy")
    if noisy is None:
        noisy = ordering_problem(rows)
    columns = [("method", [method_name_html(r["method"]) for r in rows])]
    low = [r.get("ms_per_iter_min") for r in rows]
    high = [r.get("ms_per_iter_max") for r in rows]
    ms = [[r.get("ms_per_iter") for r in rows], low, high]
    digits = decimals_for([v for col in ms for v in col if v is not None])
    columns += [(name, format_column(values, digits)) for name, values in
                zip(("time / iteration, median (ms)", "fastest round (ms)",
                     "slowest round (ms)"), ms, strict=True)]
    if any(r["method"] == "KD" for r in rows) and not noisy:
        ratios = []
        for r in rows:
            found = cost_ratios(data, r["method"], "KD")
            ratios.append(statistics.median(found["time_per_round"])
                          if found and found["time_per_round"] else None)
        columns.append(("time vs KD (×, median of rounds)", format_column(ratios, 2)))
    mib = [[r.get("saved_activations_mb") for r in rows], [r.get("peak_memory_mb") for r in rows]]
    digits = decimals_for([v for col in mib for v in col if v is not None])
    columns.append(("activations saved for backward (MiB)", format_column(mib[0], digits)))
    if any(v is not None for v in mib[1]):
        columns.append(("peak memory (MiB)", format_column(mib[1], digits)))
    columns.append(("trainable parameters", format_column(
        [r.get("trainable_parameters") for r in rows])))
    html = [f'<div class="ckd-note">{setting}</div>']
    if noisy:
        html.append(f'<div class="ckd-note ckd-warn">NOISY MEASUREMENT — no ratio is printed: '
                    f"{escape(noisy)}.</div>")
    html.append(columns_table(columns, html_first=True))
    loss_rows = data.get("loss_rows") or []
    if loss_rows:
        html.append(loss_table_html(loss_rows))
    html.append(artifact_caption(study, path))
    return "".join(html)


def loss_table_html(loss_rows: list[dict]) -> str:
    """Milliseconds of one forward and backward pass of each loss alone, per batch size."""
    losses = sort_methods(r["loss"] for r in loss_rows)
    batches = sorted({int(r["batch_size"]) for r in loss_rows})
    ms = {(r["loss"], int(r["batch_size"])): r["ms"] for r in loss_rows}
    values = [[ms.get((name, b)) for b in batches] for name in losses]
    digits = decimals_for([v for col in values for v in col if v is not None])
    columns = [("batch size", [f"{b:,}" for b in batches])]
    columns += [(f"{name} loss alone (ms)", format_column(col, digits))
                for name, col in zip(losses, values, strict=True)]
    if "CKD" in losses and "KD" in losses:
        ratio = [ms[("CKD", b)] / ms[("KD", b)] if ms.get(("KD", b)) and ("CKD", b) in ms
                 else None for b in batches]
        columns.append(("CKD vs KD (×)", format_column(ratio, 2)))
    classes = {r.get("num_classes") for r in loss_rows}
    return (f'<div class="ckd-note">The loss alone (forward and backward, median) on random '
            f"logits of {escape(', '.join(str(c) for c in sorted(classes, key=str)))} classes: "
            "CKD compares every sample with every other in the batch, so its cost grows with the "
            "square of the batch size, KD's linearly.</div>" + columns_table(columns))


# -- anything else ------------------------------------------------------------------------------
def _flat_rows(value) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)
            and all(not isinstance(v, (dict, list)) for r in value for v in r.values()))


def _rows_table(rows: list[dict], limit: int = 200) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))[:20]
    shown = rows[:limit]
    columns = [(str(k), format_column([r.get(k) for r in shown])) for k in keys]
    more = (f'<div class="ckd-note">… {len(rows) - limit} more rows in the file</div>'
            if len(rows) > limit else "")
    return columns_table(columns) + more


def json_artifact_html(study: Study, path: Path) -> str:
    """An artifact the report has no layout for: its scalar fields on one line, each list of flat
    objects as a table, its "runs" as links; anything else stays in the file (linked)."""
    caption = artifact_caption(study, path)
    data = read_artifact(path)
    if data is None:
        return caption + '<div class="ckd-note ckd-ns">unreadable JSON</div>'
    if _flat_rows(data):
        return caption + _rows_table(data)
    if not isinstance(data, dict):
        return caption
    parts = [caption]
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if scalars:
        texts = dict(zip(scalars, format_column(list(scalars.values())), strict=True))
        parts.append('<div class="ckd-note">' + "; ".join(
            f"{escape(str(k))}: <b>{escape(t)}</b>" for k, t in texts.items()) + "</div>")
    for key, value in data.items():
        if key != "runs" and _flat_rows(value):
            parts.append(f'<div class="ckd-note">{escape(key)}</div>{_rows_table(value)}')
    parts.append(run_links(study, artifact_runs(data)))
    return "".join(parts)
