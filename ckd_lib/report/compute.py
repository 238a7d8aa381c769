"""Compute used: device-hours per table and in total, on which devices, and the study's wall time.

Read from the run records only: each record holds its group's wall time, the devices it ran on
(``distributed.world_size``, ``provenance.device_name``) and the students it shared each step
with (``group``), so a run's device-seconds are its group's wall seconds times its devices,
divided among the group's students (``ckd_lib.report.collect.device_seconds``). The study's wall
time is what the runner's manifest recorded for each notebook's last execution.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from ckd_lib.report.collect import Study

ARCHITECTURES = ("x86_64", "aarch64", "arm64", "amd64", "i386", "i686", "ppc64le", "s390x")


def device_label(device_type, device_name) -> str:
    """"NVIDIA H200 (GPU)" or "CPU: Intel(R) Xeon(R) ...": the model, not the architecture
    (records written before the CPU model was recorded say "CPU (x86_64; model not recorded)")."""
    name = str(device_name or "").strip()
    if device_type == "cuda":
        return f"{name or 'GPU, name not recorded'} (GPU)"
    if not name or name in ARCHITECTURES:
        return f"CPU ({name or 'architecture not recorded'}; model not recorded)"
    return f"CPU: {name}"


@dataclass
class ComputeRow:
    scope: str
    runs: int
    device_hours: float
    devices: str  # "NVIDIA H200 (GPU) ×8 per run"
    per_device_batch: str  # "64" or "32, 64"
    negatives: str  # CKD's negatives per anchor on each device


def _devices(frame: pd.DataFrame) -> str:
    parts = []
    for (kind, name, count), group in frame.groupby(["device_type", "device_name", "device_count"],
                                                    dropna=False):
        parts.append(f"{device_label(kind, name)} ×{int(count)} per run ({len(group)} runs)")
    return "; ".join(parts) or "–"


def _negatives(frame: pd.DataFrame) -> str:
    ckd = frame[frame["method"].str.contains("CKD", regex=False)]
    if ckd.empty:
        return "–"
    out = []
    for (batch, scope), _ in ckd.groupby(["per_device_batch", "negatives_scope"], dropna=False):
        scope = scope if isinstance(scope, str) else "local"
        out.append(f"{int(batch) - 1} per anchor ({scope}, {int(batch)} per device)")
    return "; ".join(out)


def compute_row(scope: str, frame: pd.DataFrame) -> ComputeRow:
    seconds = frame["device_seconds"].dropna()
    batches = sorted({int(b) for b in frame["per_device_batch"].dropna()})
    return ComputeRow(scope=scope, runs=len(frame),
                      device_hours=float(seconds.sum()) / 3600 if len(seconds) else math.nan,
                      devices=_devices(frame), per_device_batch=", ".join(map(str, batches)),
                      negatives=_negatives(frame))


def compute_used(study: Study, tables) -> list[ComputeRow]:
    """One row per table (its runs), then the total over every complete run of the profile
    (a run shown in two tables counts once in the total)."""
    frame = study.frame
    if frame.empty:
        return []
    rows = []
    for table in tables.all():
        if table.kind == "teachers":  # the teachers' own training runs, not the runs that
            part = frame[frame["section"] == "teacher"]  # evaluated them
        else:
            part = frame[frame["run_id"].isin(table.run_ids())]
        if not part.empty:
            rows.append(compute_row(table.title, part))
    rows.append(compute_row("all runs of this profile", frame))
    return rows


def study_wall_seconds(study: Study) -> float | None:
    """Seconds the runner spent executing the profile's notebooks (each notebook's last
    execution, from ``executed/manifest.json``), or None without a manifest."""
    path = study.executed_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    entries = manifest.get("notebooks", manifest) if isinstance(manifest, dict) else {}
    seconds = [e.get("seconds") for e in entries.values() if isinstance(e, dict)]
    seconds = [float(s) for s in seconds if isinstance(s, (int, float))]
    return sum(seconds) if seconds else None


def hours_text(hours: float) -> str:
    if hours is None or not math.isfinite(hours):
        return "–"
    if hours < 1:
        return f"{hours * 60:.1f} device-minutes"
    return f"{hours:,.1f} device-hours"
