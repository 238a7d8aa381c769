"""The reproduction summary at the top of the report, in the ML Reproducibility Challenge's
structure: scope (the claims tested), methodology (data, models, budgets, seeds, selection
rule), results per claim, compute used, and every departure from the paper's setting.

Nothing here is written by hand: every sentence is generated from the run records, the claims'
evidence (``ckd_lib.report.claims``), the compute (``ckd_lib.report.compute``), the published
recipes and the profile's own file, so it changes when the runs do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ckd_lib.report.claims import Evidence, verdict_counts
from ckd_lib.report.collect import Study, pretty_dataset, profile_of
from ckd_lib.report.compute import ComputeRow, device_label, hours_text, study_wall_seconds
from ckd_lib.report.stats import MIN_SEEDS
from ckd_lib.report.tables import ReportTables

PAPER_SEEDS = 5  # mdistiller and the CKD code report the mean of 5 runs on CIFAR-100


@dataclass
class Summary:
    scope: list[str] = field(default_factory=list)
    methodology: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    compute: list[str] = field(default_factory=list)
    departures: list[str] = field(default_factory=list)


def _profile_common(name: str, results_dir) -> dict:
    """The profile's common values, root of its chain first (what every notebook starts from)."""
    profile = profile_of(name, results_dir)
    values: dict = {}
    for level in profile.chain() if profile is not None else []:
        values.update(level.common)
    return values


def _budgets(tables: ReportTables) -> list[str]:
    """Per method of the main tables: the budgets its cells trained (schedule, batch, steps)."""
    budgets: dict[str, set[str]] = {}
    for table in tables.main:
        for row in table.rows:
            for method, cell in row.cells.items():
                if method != "teacher" and cell.best.n:
                    budgets.setdefault(method, set()).add(cell.budget.text())
    return [f"{m}: {' or '.join(sorted(b))}" for m, b in budgets.items()]


def _seeds(tables: ReportTables) -> str:
    counts = sorted({c.n for t in tables.main for c in t.cells() if c.method != "teacher"})
    if not counts:
        return "no seeds"
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{span} seed(s) per main-table cell"


def departures(study: Study, tables: ReportTables) -> list[str]:
    """Every way the records' setting departs from the paper's, from the records and profile."""
    from ckd_lib.report.html import banner_facts

    facts = banner_facts(study)
    common = _profile_common(study.profile, study.results_dir)
    out = []
    datasets = sorted(set(study.frame["dataset"])) if not study.empty else []
    if datasets and datasets != ["cifar100"] and not facts["imagenet_only"]:
        out.append(f"Data: {', '.join(pretty_dataset(d) for d in datasets)} instead of "
                   "CIFAR-100.")
    sizes = sorted({(r.get("data") or {}).get("train_size") for r in study.records} - {None})
    if facts["subset"]:
        out.append(f"Training and test subsets (training images per run: "
                   f"{', '.join(f'{s:,}' for s in sizes)}), drawn with data_seed.")
    scale = common.get("epoch_scale")
    if facts["shortened"]:
        out.append(f"Schedules shortened: every recipe's epochs, milestones and warm-up × "
                   f"{scale:g} ({'; '.join(_budgets(tables))})." if scale not in (None, 1, 1.0)
                   else "Schedules shorter than the published recipes.")
    substitute = common.get("substitute") or {}
    if substitute:
        out.append("Stand-in models (recipe model → model trained): "
                   + ", ".join(f"{a} → {b}" for a, b in substitute.items()) + ".")
    counts = sorted({c.n for t in tables.main for c in t.cells() if c.method != "teacher"})
    if counts and counts[0] < PAPER_SEEDS:
        out.append(f"{_seeds(tables)}, against the {PAPER_SEEDS} the paper's codebase averages.")
    teacher_runs = study.frame[study.frame["section"] == "teacher"] if not study.empty else []
    if len(teacher_runs):
        epochs = sorted({int(e) for e in teacher_runs["epochs"]})
        out.append(f"Teachers trained by this study ({'/'.join(map(str, epochs))} epochs), not "
                   "the released RepDistiller checkpoints.")
    if facts["untrained"]:
        out.append(f"UNTRAINED teacher(s) {', '.join(facts['untrained'])} (random weights).")
    kinds = sorted({device_label(t, n) for t, n in zip(study.frame["device_type"],
                                                      study.frame["device_name"],
                                                      strict=True)}) if not study.empty else []
    if kinds and all(not k.endswith("(GPU)") for k in kinds):
        out.append(f"Trained on {', '.join(kinds)} in float32, not on GPUs with the "
                   "authors' settings.")
    borrowed = sorted({c.method for t in tables.main for c in t.cells() if _borrows(c.method)})
    if borrowed:
        out.append(f"Methods without a published recipe, on a borrowed one: "
                   f"{', '.join(borrowed)}.")
    return out


def _borrows(method: str) -> bool:
    from ckd_lib.errors import InputError
    from ckd_lib.methods import get_method

    try:
        return bool(get_method(method).recipe_from)
    except InputError:
        return False


def summarise(study: Study, tables: ReportTables, evidence: list[Evidence],
              compute: list[ComputeRow]) -> Summary:
    summary = Summary()
    counts = verdict_counts(evidence)
    tested = [e.claim.key for e in evidence if e.verdict.verdict != "not run in this profile"]
    summary.scope.append(
        f"{len(evidence)} claims (C1–C{len(evidence)}): those of the CKD paper and this study's "
        f"own C8 (gains at an equal budget in optimizer steps). {len(tested)} have runs in "
        f"profile {study.profile}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + ".")
    if study.empty:
        summary.methodology.append("No complete run records.")
    else:
        datasets = ", ".join(pretty_dataset(d) for d in sorted(set(study.frame["dataset"])))
        sizes = sorted({((r.get("data") or {}).get("train_size"),
                         (r.get("data") or {}).get("test_size")) for r in study.records},
                       key=str)
        size_text = "; ".join(f"{a:,} training / {b:,} test images" for a, b in sizes
                              if a is not None and b is not None)
        pairs = sorted({f"{t} → {s}" for t, s in zip(study.frame["teacher"],
                                                     study.frame["student"], strict=True) if t})
        summary.methodology += [
            f"Data: {datasets} ({size_text}).",
            f"Models: {len(pairs)} teacher → student pair(s) trained: {', '.join(pairs)}.",
            "Budgets (main tables, each method at its own recipe): "
            + "; ".join(_budgets(tables)) + ".",
            f"Seeds: {_seeds(tables)}; a claim needs {MIN_SEEDS} seeds common to its sides.",
            "Selection: 'best' is the highest test top-1 over the epochs of a run — selected on "
            "the test set, so it flatters (by about 0.3 points on CIFAR-100); 'last' is the "
            "top-1 after the last epoch, the unbiased number. Tables show both; claims are "
            "judged on last.",
        ]
    summary.results.append("; ".join(
        f"{e.claim.key} {e.verdict.verdict}"
        + (" (at UNEQUAL budgets in optimizer steps)" if any(c.unequal_budget
                                                             for c in e.comparisons) else "")
        for e in evidence)
                           + ". The claims table below gives each statistic, interval, seeds "
                           "and runs.")
    total = compute[-1] if compute else None
    if total is not None:
        summary.compute.append(
            f"{hours_text(total.device_hours)} over {total.runs} runs on {total.devices}.")
    wall = study_wall_seconds(study)
    if wall is not None:
        summary.compute.append(f"Study wall time (each notebook's last execution): "
                               f"{wall / 60:.1f} minutes.")
    summary.departures = departures(study, tables) or ["None found in the records."]
    return summary


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None or not math.isfinite(seconds) else f"{seconds / 60:.1f} min"
