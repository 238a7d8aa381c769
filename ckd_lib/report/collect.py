"""What the report reads: the complete run records of one profile, one row per run.

The report reads nothing but run records (``results/<profile>/runs/*/record.json``) and the
artifacts other notebooks wrote (``results/<profile>/artifacts``). This module turns the records
into a table with the fields the report groups by, and sorts runs into *configurations*: runs that
differ only in their seed (and in execution options such as the device) are seeds of one
configuration, and only those are ever averaged together.

How runs are sorted into the report's sections, from the record alone (the study's notebooks label
their runs ``teacher``, ``same_arch``, ``cross_arch``, ``ablation <variant>``, ``matched_budget``):
- a ``label`` starting with "teacher" marks a teacher's own training run;
- a ``label`` containing "ablation" puts a run in the ablation table;
- a ``label`` containing "budget" or "matched" puts it in the matched-budget table only;
- a CE run whose student is the teacher of a distillation run is a teacher run;
- every other run is a candidate for the main tables. When one table cell has several
  configurations, the cell shows the one with the most seeds (ties: the published recipe, then the
  method's usual schedule kind, then the fewer epochs) and the others are listed with the ablations
  as "other configurations", so no run is left out of the report.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ckd_lib.data.catalog import dataset_base, display_name
from ckd_lib.models.registry import family
from ckd_lib.report.literature import PaperNumbers, load_literature
from ckd_lib.results import load_records

# Config fields that change what a run computes, apart from the seed: runs equal in all of these
# (and in their label) are seeds of one configuration. Execution options (device, loader, amp,
# channels_last, cuda_graphs, eval batch size, workers) do not make a new configuration; the
# provenance section lists the devices.
CONFIG_FIELDS = ("dataset", "teacher", "student", "method", "epochs", "lr", "schedule",
                 "batch_size", "weight_decay", "momentum", "train_subset", "test_subset",
                 "drop_last")
# How tables write a dataset: the data catalog's one vocabulary ("synthetic data (num_train=64)").
pretty_dataset = display_name


def is_same_architecture(teacher: str, student: str) -> bool:
    return family(teacher) == family(student)


def _method_defaults(method: str | None) -> dict:
    """The registry's loss defaults of a classification method ({} for an unknown name)."""
    from ckd_lib.errors import InputError
    from ckd_lib.methods import get_method

    try:
        return get_method(str(method)).defaults()
    except InputError:
        return {}


def loss_params(config: dict) -> dict:
    """The method's default loss parameters updated with the config's own (as the engine does)."""
    return {**_method_defaults(config.get("method")), **(config.get("loss") or {})}


def loss_overrides(config: dict) -> dict:
    """Loss parameters that differ from the method's defaults."""
    defaults = _method_defaults(config.get("method"))
    return {k: v for k, v in loss_params(config).items() if defaults.get(k, object()) != v}


def section_of_label(label: str) -> str:
    text = (label or "").lower()
    if text.startswith("teacher"):
        return "teacher"
    if "ablation" in text:
        return "ablation"
    if "budget" in text or "matched" in text:
        return "budget"
    return "main"


def iterations_of(record: dict) -> int:
    """Optimizer steps the run took: per epoch, training images over the batch size (rounded up).
    With the images it saw (:func:`images_of`), this is a run's budget: epochs alone hide a
    batch size that differs (CKD's batch-32 recipes take twice the steps of a batch-64 one)."""
    batch = max(int(record["config"].get("batch_size") or 1), 1)
    return sum(math.ceil(int(h.get("train_images") or 0) / batch)
               for h in record.get("history", []))


def images_of(record: dict) -> int:
    """Training images the run saw, summed over its epochs (each image once per epoch)."""
    return sum(int(h.get("train_images") or 0) for h in record.get("history", []))


def device_seconds(record: dict) -> float | None:
    """Device-seconds this run used: its group's wall time times the devices it ran on, shared
    equally among the students trained together (they shared every step)."""
    wall = record.get("wall_seconds")
    if not wall:
        return None
    devices = int((record.get("distributed") or {}).get("world_size") or 1)
    group = max(len(record.get("group") or [record["run_id"]]), 1)
    return float(wall) * devices / group


def teacher_identity(record: dict) -> str | None:
    """What tells one teacher from another: the checkpoint's sha256, else its path; an
    untrained teacher is drawn from the run's seed, so each seed has its own."""
    info = record.get("teacher") or {}
    cfg = record["config"]
    if not cfg.get("teacher"):
        return None
    checkpoint = info.get("checkpoint", cfg.get("teacher_checkpoint"))
    if checkpoint == "untrained":
        return f"untrained {cfg['teacher']} (seed {cfg.get('seed')})"
    return info.get("sha256") or str(checkpoint)


def config_key(config: dict) -> str:
    data = {name: config.get(name) for name in CONFIG_FIELDS}
    if config.get("schedule") == "step":
        data["milestones"] = list(config.get("milestones") or [])
        data["lr_decay"] = config.get("lr_decay")
    data["loss"] = loss_params(config)
    data["label"] = config.get("label", "") or ""
    return json.dumps(data, sort_keys=True, default=str)


SETTINGS_SEPARATOR = "; "


def describe_settings(config: dict) -> str:
    """A short human description of a configuration: schedule, batch, lr and changed loss terms."""
    schedule = config.get("schedule")
    if schedule == "step":
        ms = "/".join(str(m) for m in config.get("milestones") or [])
        schedule = f"step@{ms}" if ms else "step"
    parts = [f"{config.get('epochs')} ep {schedule}", f"bs {config.get('batch_size')}",
             f"lr {config.get('lr')}"]
    over = loss_overrides(config)
    if over:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(over.items())))
    for name in ("train_subset", "test_subset"):
        if config.get(name):
            parts.append(f"{name}={config[name]}")
    return SETTINGS_SEPARATOR.join(parts)


def relative_path(path: str | Path, base: str | Path) -> str:
    """`path` relative to `base` with forward slashes (how the report links to it)."""
    try:
        rel = Path(path).resolve().relative_to(Path(base).resolve())
    except ValueError:
        rel = Path(os.path.relpath(Path(path).resolve(), Path(base).resolve()))
    return rel.as_posix()


@dataclass
class Study:
    """The complete records of one profile and everything the report derives from them."""

    profile: str
    results_dir: Path
    records: list[dict]
    frame: pd.DataFrame
    literature: list[dict]
    paper: PaperNumbers
    runs_dir: Path
    artifacts_dir: Path
    executed_dir: Path
    notebooks_dir: Path | None = None
    by_id: dict[str, dict] = field(default_factory=dict)
    # runs left out of every table, with why: diverged, a record its files do not support, or a
    # record.json that cannot be read
    excluded: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.frame.empty

    @property
    def report_dir(self) -> Path:
        """results/<profile>: where report.html lives; the report's links are relative to it."""
        return self.results_dir / self.profile


def build_frame(records: list[dict], link_base: str | Path) -> pd.DataFrame:
    """One row per run with everything the report groups, averages and links by; links are
    relative to `link_base` (the profile's folder, where its report.html lives)."""
    rows = []
    for r in records:
        cfg = r["config"]
        teacher_info = r.get("teacher") or {}
        iterations = iterations_of(r)
        train_seconds = r.get("train_seconds")
        prov = r.get("provenance") or {}
        dist = r.get("distributed") or {}
        path = r.get("_path") or ""
        try:
            written = datetime.fromtimestamp(Path(path).stat().st_mtime, tz=timezone.utc)
        except OSError:
            written = None
        rows.append({
            "run_id": r["run_id"], "dataset": cfg["dataset"],
            "dataset_base": dataset_base(cfg["dataset"]), "teacher": cfg.get("teacher"),
            "student": cfg["student"], "method": cfg["method"], "seed": cfg.get("seed"),
            "init_seed": r.get("init_seed", cfg.get("init_seed")),
            "label": cfg.get("label", "") or "", "section": section_of_label(cfg.get("label")),
            "epochs": cfg.get("epochs"), "schedule": cfg.get("schedule"),
            "batch_size": cfg.get("batch_size"), "lr": cfg.get("lr"),
            "config_key": config_key(cfg), "settings": describe_settings(cfg),
            "loss_overrides": json.dumps(loss_overrides(cfg), sort_keys=True, default=str),
            "best_top1": (r.get("best") or {}).get("top1"),
            "best_epoch": (r.get("best") or {}).get("epoch"),
            "last_top1": (r.get("last") or {}).get("top1"),
            "last_top5": (r.get("last") or {}).get("top5"),
            "last_epoch": (r.get("last") or {}).get("epoch"),
            "teacher_checkpoint": teacher_info.get("checkpoint", cfg.get("teacher_checkpoint")),
            "teacher_sha256": teacher_info.get("sha256"),
            "teacher_identity": teacher_identity(r),
            "teacher_top1": teacher_info.get("test_top1"),
            "teacher_stored_accuracy": teacher_info.get("stored_accuracy"),
            "train_seconds": train_seconds, "iterations": iterations, "images": images_of(r),
            "device_seconds": device_seconds(r), "device_type": prov.get("device_type"),
            "device_name": prov.get("device_name"),
            "device_count": int(dist.get("world_size") or 1),
            "per_device_batch": dist.get("per_device_batch") or cfg.get("batch_size"),
            "negatives_scope": dist.get("negatives_scope"),
            "seconds_per_iteration": (train_seconds / iterations
                                      if train_seconds and iterations else None),
            "group_size": len(r.get("group") or [r["run_id"]]),
            "images_per_second": r.get("images_per_second"),
            "path": path, "link": relative_path(path, link_base) if path else "",
            "written": written,
        })
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=FRAME_COLUMNS)
    # a run without a teacher has None there (never NaN), so `teacher or "none"` works everywhere
    for name in ("teacher", "teacher_checkpoint", "teacher_sha256"):
        if name in frame:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


FRAME_COLUMNS = (
    "run_id", "dataset", "dataset_base", "teacher", "student", "method", "seed", "init_seed",
    "label", "section", "epochs", "schedule", "batch_size", "lr", "config_key", "settings",
    "loss_overrides", "best_top1", "best_epoch", "last_top1", "last_top5", "last_epoch",
    "teacher_checkpoint",
    "teacher_sha256", "teacher_identity", "teacher_top1", "teacher_stored_accuracy",
    "train_seconds", "iterations", "images", "device_seconds", "device_type", "device_name",
    "device_count", "per_device_batch", "negatives_scope", "seconds_per_iteration", "group_size",
    "images_per_second",
    "path", "link", "written")


def profile_of(name: str, results_dir: str | Path = "results"):
    """The study profile of ``<results_dir>/<name>/`` (a profile given by its file: that file;
    else notebooks/profiles/<name>.yaml), or None when it does not load (a results folder may
    hold a profile this checkout lacks)."""
    from ckd_lib.study.profiles import results_profile

    return results_profile(name, results_dir)


def profile_notebooks(name: str, results_dir: str | Path = "results") -> list[str]:
    """The notebooks profile `name` runs ([] without a profile file). The report shows a section
    whose data is missing only when the profile runs the notebook that makes it (then it says
    that notebook has not run yet)."""
    profile = profile_of(name, results_dir)
    return list(profile.notebooks) if profile is not None else []


def _repo_notebooks_dir() -> Path | None:
    here = Path(__file__).resolve().parents[2] / "notebooks"
    return here if here.is_dir() else None


def load_study(profile: str = "demo", results_dir: str | Path = "results",
               paper_numbers_csv: str | Path | None = None,
               literature_csv: str | Path | None = None) -> Study:
    """The complete records of `profile` under `results_dir`, with the published numbers.

    `paper_numbers_csv` (None or "") means ``<results_dir>/paper_numbers.csv``; it may not exist
    (the report then says "not supplied"). `literature_csv` defaults to the packaged copy.
    """
    results_dir = Path(results_dir)
    runs_dir = results_dir / profile / "runs"
    unreadable: list[dict] = []
    every = load_records(runs_dir, status=None, unreadable=unreadable) \
        if runs_dir.is_dir() else []
    records = [r for r in every if r["status"] == "complete" and not r["_problems"]]
    excluded = [excluded_entry(r, results_dir / profile) for r in every
                if r["status"] == "diverged" or r["_problems"]]
    detection_dir = results_dir / profile / "detection"
    if detection_dir.is_dir():  # the COCO table shows the believed ones; the others are listed
        excluded += [excluded_entry(r, results_dir / profile)
                     for r in load_records(detection_dir, status=None, unreadable=unreadable)
                     if r["status"] == "diverged" or r["_problems"]]
    excluded += [unreadable_entry(u, results_dir / profile) for u in unreadable]
    frame = build_frame(records, results_dir / profile)
    if not paper_numbers_csv:  # None or "": the file beside the results
        paper_numbers_csv = results_dir / "paper_numbers.csv"
    mark_teacher_runs(frame)
    return Study(profile=profile, results_dir=results_dir, records=records, frame=frame,
                 literature=load_literature(literature_csv),
                 paper=PaperNumbers(paper_numbers_csv), runs_dir=runs_dir,
                 artifacts_dir=results_dir / profile / "artifacts",
                 executed_dir=results_dir / profile / "executed",
                 notebooks_dir=_repo_notebooks_dir(),
                 by_id={r["run_id"]: r for r in records}, excluded=excluded)


def excluded_entry(record: dict, base: Path) -> dict:
    """A run the tables leave out, and why (its record says diverged, or does not hold up)."""
    if record["status"] == "diverged":
        d = record.get("diverged") or {}
        where = f"epoch {d['epoch']}" if "epoch" in d else f"iteration {d.get('iteration')}"
        why = f"diverged at {where}: {d.get('what', 'non-finite values')} (lr {d.get('lr')})"
    else:
        why = "record not supported by its files: " + "; ".join(record["_problems"])
    cfg = record["config"]
    return {"run_id": record["run_id"], "method": cfg.get("method"),
            "teacher": cfg.get("teacher"), "student": cfg.get("student"),
            "label": cfg.get("label", ""), "why": why,
            "link": relative_path(record["_path"], base)}


def unreadable_entry(unreadable: dict, base: Path) -> dict:
    """A run folder whose record.json cannot be read or is not a run record
    (``load_records(unreadable=...)``): in no table, listed with why."""
    path = Path(unreadable["path"])
    return {"run_id": path.parent.name, "method": "?", "teacher": None, "student": None,
            "label": "", "why": f"its record.json is unreadable: {unreadable['why']}",
            "link": relative_path(path, base)}


def mark_teacher_runs(frame: pd.DataFrame) -> None:
    """CE runs labelled "teacher", or whose model is the teacher of a distillation run, or whose
    checkpoint a distillation run loaded, are teacher runs (the teachers table), unless their
    model is also some pair's student (then they stay candidates for its student column)."""
    if frame.empty:
        return
    distilled = frame[frame["method"] != "CE"]
    teachers = set(zip(distilled["dataset"], distilled["teacher"], strict=False))
    students = set(zip(distilled["dataset"], distilled["student"], strict=False))
    # a checkpoint that lies in a run's folder names that run as the teacher's own run
    used = {Path(str(c)).parent.name for c in distilled["teacher_checkpoint"].dropna()}
    is_teacher = []
    for row in frame.itertuples():
        key = (row.dataset, row.student)
        # a model that is also some pair's student keeps its run in the student column
        is_teacher.append(row.method == "CE" and row.section != "ablation"
                          and key not in students
                          and (row.section == "teacher" or row.run_id in used
                               or key in teachers))
    frame["section"] = ["teacher" if t else ("main" if s == "teacher" else s)
                        for t, s in zip(is_teacher, frame["section"], strict=True)]
