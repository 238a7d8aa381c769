"""``results/report.html``: the page that lists every profile's report.

Each profile keeps its own report (``results/<profile>/report.html``), so building one profile
never replaces another's. The top-level page is an index of them, with the date each was built
and what it is (the report's own headline). It keeps the name ``report.html`` because that is
the one page ``make reproduce`` has always pointed users to: opening it after any build shows
every report there is, and no stale single-profile report can linger under that name.

What the index says about a report is written beside it at build time
(``results/<profile>/report.json``), so the index never re-reads any profile's records.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from ckd_lib import results
from ckd_lib.report.collect import profile_of
from ckd_lib.study.profiles import results_command_form

INDEX_NAME = "report.html"
META_NAME = "report.json"


def profile_description(folder: Path) -> str:
    """The description of the profile of results folder ``folder`` from its YAML file (a
    profile given by its path included; "" without one)."""
    profile = profile_of(folder.name, folder.parent)
    return " ".join(profile.description.split()) if profile is not None else ""


def write_meta(profile_dir: Path, headline: str, runs: int, detection_runs: int) -> Path:
    """results/<profile>/report.json: what the index shows for this profile's report."""
    meta = {"profile": profile_dir.name, "headline": headline, "runs": runs,
            "detection_runs": detection_runs,
            "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "description": profile_description(profile_dir),
            "command": results_command_form(profile_dir.name, profile_dir.parent)}
    path = profile_dir / META_NAME
    results.atomic_write_json(path, meta)
    return path


def _entry(report: Path) -> dict:
    folder = report.parent
    try:
        meta = json.loads((folder / META_NAME).read_text())
    except (OSError, json.JSONDecodeError):  # a report built before report.json existed
        built = datetime.fromtimestamp(report.stat().st_mtime, tz=timezone.utc)
        meta = {"headline": "", "runs": None, "detection_runs": None,
                "built": built.strftime("%Y-%m-%d %H:%M UTC"),
                "description": profile_description(folder)}
    meta["profile"] = folder.name
    summary = folder / "summary.csv"  # a detection-only profile's has no table cell in it
    meta["summary"] = summary.is_file() and len(summary.read_text().splitlines()) > 1
    return meta


def index_entries(results_dir: str | Path) -> list[dict]:
    """One entry per profile folder holding a report.html, newest build first."""
    reports = sorted(Path(results_dir).glob(f"*/{INDEX_NAME}"))
    return sorted((_entry(r) for r in reports), key=lambda e: e["built"], reverse=True)


def _runs_text(entry: dict) -> str:
    parts = []
    if entry.get("runs"):
        parts.append(f"{entry['runs']} classification runs")
    if entry.get("detection_runs"):
        parts.append(f"{entry['detection_runs']} detection runs")
    return ", ".join(parts) or "–"


def index_html(entries: list[dict]) -> str:
    rows = []
    for e in entries:
        name = escape(e["profile"])
        command = e.get("command") or e["profile"]  # a profile given by its file: the file
        given = "" if command == e["profile"] else f'<div class="d">{escape(command)}</div>'
        links = f'<a href="{name}/report.html">report</a>'
        if e["summary"]:
            links += f' · <a href="{name}/summary.csv">summary.csv</a>'
        rows.append(f"<tr><td><b>{name}</b>{given}</td><td>{links}</td><td>{escape(e['built'])}</td>"
                    f"<td>{escape(_runs_text(e))}</td><td><div>{escape(e['headline'])}</div>"
                    f'<div class="d">{escape(e["description"])}</div></td></tr>')
    body = ("".join(rows) if rows else
            '<tr><td colspan="5">No report has been built yet: run <code>make reproduce</code>.'
            "</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>CKD study: reports by profile</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 24px; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #c8c8c8; padding: 6px 8px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }}
th {{ background: #f2f4f7; white-space: nowrap; }}
td:nth-child(3) {{ white-space: nowrap; }}
td:last-child {{ width: 50%; }}
.d {{ color: #555; font-size: 0.9em; margin-top: 4px; }}
</style></head>
<body><h1>CKD study: reports by profile</h1>
<p>Each profile (<code>notebooks/profiles/&lt;name&gt;.yaml</code>, or a YAML file given by its
path, shown under its name) has its own report, built from
its own run records under <code>results/&lt;profile&gt;/</code>; building one never replaces
another. Newest first.</p>
<table><thead><tr><th>profile</th><th>open</th><th>built</th><th>runs</th>
<th>what it is</th></tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def write_index(results_dir: str | Path) -> Path:
    """Rewrite results/report.html from the profile folders' reports (atomically)."""
    path = Path(results_dir) / INDEX_NAME
    results.atomic_write_bytes(path, index_html(index_entries(results_dir)).encode("utf-8"))
    return path
