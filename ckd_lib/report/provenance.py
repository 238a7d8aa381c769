"""Where the report's numbers come from: code versions, software, devices, dates and commands.

Everything here is read from the run records (their ``provenance`` block and the record files'
modification times; the detection runs' records too) and from the executed notebooks under
``results/<profile>/executed``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ckd_lib.report.collect import Study

# Which notebook makes which table, by its file name, when the executed notebooks do not say.
TABLE_KEYWORDS = {
    "same": ("same",),
    "cross": ("cross",),
    "teachers": ("teacher",),
    "ablations": ("ablation",),
    "budget": ("budget", "matched"),
    "efficiency": ("efficien",),
    "visualisations": ("visual", "tsne", "t_sne"),
}
REPORT_NOTEBOOK = "90_report"


@dataclass
class Provenance:
    profile: str
    commits: list[dict] = field(default_factory=list)
    versions: list[dict] = field(default_factory=list)
    devices: list[dict] = field(default_factory=list)
    first_written: str = ""
    last_written: str = ""
    n_records: int = 0
    datasets: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    # executed notebooks of the profile (the report's own excepted): each has <name>.html beside
    # it once the report is published
    executed: list[str] = field(default_factory=list)

    @property
    def any_dirty(self) -> bool:
        return any(c["dirty"] for c in self.commits)


def _provenance(record: dict) -> dict:
    """A record's provenance as the report shows it: CUDA and cuDNN only where a GPU ran (a
    CPU run's torch may be a CUDA build; its versions say nothing about the run), the CPU's
    model rather than its architecture."""
    from ckd_lib.report.compute import device_label

    prov = dict(record.get("provenance") or {})
    if prov.get("device_type") != "cuda":
        prov["cuda"] = prov["cudnn"] = "not used (CPU)"
    prov["device_name"] = device_label(prov.get("device_type"), prov.get("device_name"))
    return prov


def _counts(records: list[dict], keys: tuple[str, ...]) -> list[dict]:
    counter = Counter(tuple(_provenance(r).get(k) for k in keys) for r in records)
    out = []
    for values, count in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        out.append({**dict(zip(keys, values, strict=True)), "runs": count})
    return out


def cell_of(record: dict, sections: dict[str, str]) -> str:
    """The table cell a run belongs to, in words: section, pair, method."""
    cfg = record.get("config") or {}
    section = "coco" if record.get("task") == "detection" else \
        sections.get(record.get("run_id"), "main")
    if section == "teacher":
        return f"teachers: {cfg.get('student')}"
    pair = f"{cfg.get('teacher')}→{cfg.get('student')}" if cfg.get("teacher") \
        else str(cfg.get("student"))
    return f"{section}: {pair} {cfg.get('method')}"


def commit_cells(rows: list[dict], records: list[dict], study: Study) -> list[dict]:
    """Each commit row with the table cells its runs are in: ckd_lib's own code is not part of
    a run's identity (a new commit does not retrain finished runs), so when the records come
    from several commits, the report says which cells each one produced."""
    if len(rows) < 2:
        return [{**row, "cells": "every run"} for row in rows]
    sections = dict(zip(study.frame["run_id"], study.frame["section"], strict=True)) \
        if not study.empty else {}
    out = []
    for row in rows:
        cells = sorted({cell_of(r, sections) for r in records
                        if ((r.get("provenance") or {}).get("commit"),
                            (r.get("provenance") or {}).get("dirty"))
                        == (row["commit"], row["dirty"])})
        out.append({**row, "cells": "; ".join(cells)})
    return out


def detection_records(study: Study) -> list[dict]:
    """The profile's complete detection run records (results/<profile>/detection)."""
    from ckd_lib.results import load_records

    folder = study.report_dir / "detection"
    return [r for r in load_records(folder) if r.get("task") == "detection"] \
        if folder.is_dir() else []


def collect_provenance(study: Study) -> Provenance:
    detection = detection_records(study)
    records = study.records + detection
    prov = Provenance(profile=study.profile, n_records=len(records))
    prov.commits = commit_cells(_counts(records, ("commit", "dirty")), records, study)
    prov.versions = _counts(records, ("ckd_lib", "torch", "cuda", "cudnn", "python"))
    prov.devices = _counts(records, ("device_type", "device_name", "device_count"))
    written = [Path(r["_path"]).stat().st_mtime for r in records
               if r.get("_path") and Path(r["_path"]).is_file()]
    if written:
        def when(seconds: float) -> str:
            return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

        prov.first_written, prov.last_written = when(min(written)), when(max(written))
    prov.datasets = sorted(set(study.frame["dataset"])) if not study.empty else []
    if detection:
        prov.datasets.append("MS-COCO format (detection)")
    prov.notebooks = available_notebooks(study)
    if study.executed_dir.is_dir():
        prov.executed = sorted(p.stem for p in study.executed_dir.glob("[!.]*.ipynb")
                               if p.stem != REPORT_NOTEBOOK)
    return prov


def borrowed_recipes(methods) -> dict[str, str]:
    """For each method of ``methods`` that borrows another's recipe: the rule of what it takes
    (``Method.recipe_rule``: which per-pair loss values pass on) and who registered it."""
    from ckd_lib.errors import InputError
    from ckd_lib.methods import get_method

    out = {}
    for method in sorted(set(methods)):
        try:
            spec = get_method(method)
        except InputError:  # a record of a plugin not loaded now
            continue
        if spec.recipe_from:
            who = f"a plugin, {spec.source}" if spec.source != "ckd_lib" else "ckd_lib"
            out[method] = f"{spec.recipe_rule()} (registered by {who})"
    return out


def available_notebooks(study: Study) -> list[str]:
    """Notebook names (file stems) of the study: the executed ones and those in notebooks/."""
    names = set()
    if study.executed_dir.is_dir():
        names.update(p.stem for p in study.executed_dir.glob("[!.]*.ipynb"))
    if study.notebooks_dir is not None and study.notebooks_dir.is_dir():
        names.update(p.stem for p in study.notebooks_dir.glob("[0-9]*.py"))
        names.update(p.stem for p in study.notebooks_dir.glob("[0-9]*.ipynb"))
    return sorted(names)


def _executed_texts(study: Study) -> dict[str, str]:
    texts = {}
    if study.executed_dir.is_dir():
        for path in sorted(study.executed_dir.glob("[!.]*.ipynb")):
            if path.stem == REPORT_NOTEBOOK:
                continue
            try:
                nb = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            # only what the notebook printed or displayed (not its source)
            parts = [json.dumps(cell.get("outputs", [])) for cell in nb.get("cells", [])]
            texts[path.stem] = "\n".join(parts)
    return texts


def notebooks_for(study: Study, table_key: str, run_ids: set[str],
                  texts: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The notebooks that made a table's runs, and how that was found out.

    First the executed notebooks' outputs are searched for the table's run ids; failing that,
    notebook file names are matched against the table's kind (same, cross, ablation, ...).
    """
    texts = _executed_texts(study) if texts is None else texts
    found = [name for name, text in texts.items() if any(rid in text for rid in run_ids)]
    if found:
        return found, "run ids found in the executed notebook"
    kind = table_key.split(":")[-1]
    words = TABLE_KEYWORDS.get(kind, ())
    by_name = [n for n in available_notebooks(study) if n != REPORT_NOTEBOOK
               and any(w in n.lower() for w in words)]
    if by_name:
        return by_name, "by notebook name"
    return [], "not found"


def commands_for(profile: str, notebooks: list[str]) -> list[str]:
    """The commands that remake ``notebooks`` of ``profile`` (named as a command line must:
    ``ckd_lib.study.profiles.command_form``)."""
    cmds = [f"make reproduce PROFILE={profile}"]
    cmds += [f"python -m ckd_lib.study --profile {profile} --only {nb}" for nb in notebooks]
    return cmds


def table_commands(study: Study, tables: list) -> dict[str, dict]:
    """For each table key: the notebooks that made it, how we know, and the commands (naming
    a profile given by its file by that file's path, as the runner must be given it)."""
    from ckd_lib.study.profiles import results_command_form

    texts = _executed_texts(study)
    profile = results_command_form(study.profile, study.results_dir)
    out = {}
    for table in tables:
        notebooks, how = notebooks_for(study, table.key if table.kind == "main" else table.kind,
                                       table.run_ids(), texts)
        out[table.key] = {"notebooks": notebooks, "how": how,
                          "commands": commands_for(profile, notebooks)}
    out["report"] = {"notebooks": [REPORT_NOTEBOOK], "how": "this report",
                     "commands": commands_for(profile, [REPORT_NOTEBOOK])}
    return out
