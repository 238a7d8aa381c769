"""The report's figures, drawn from run records (and from the artifacts other notebooks wrote).

Each function returns a matplotlib Figure, or None when the records hold nothing to draw; the
notebook displays the figure, so it ends up as a PNG inside the HTML report.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ckd_lib.report.collect import Study, method_rank, pretty_dataset
from ckd_lib.report.tables import PairRow, ReportTables

try:  # seaborn only styles the figures; they draw without it
    import seaborn as sns

    _PALETTE = sns.color_palette("colorblind", 10)
except ImportError:  # pragma: no cover
    sns = None
    _PALETTE = plt.rcParams["axes.prop_cycle"].by_key()["color"]

METHOD_COLORS = {"CE": _PALETTE[7], "KD": _PALETTE[0], "DKD": _PALETTE[2], "CKD": _PALETTE[3],
                 "KD+CKD": _PALETTE[4], "CKD+ReviewKD": _PALETTE[5], "teacher": _PALETTE[8]}


def _name(value) -> str:
    """A model name, or "none" for a missing one (None or NaN in a frame)."""
    return value if isinstance(value, str) and value else "none"


def color(method: str):
    return METHOD_COLORS.get(method, _PALETTE[hash(method) % len(_PALETTE)])


def _style():
    if sns is not None:
        sns.set_theme(style="whitegrid", context="notebook")


def gain_over_kd(tables: ReportTables, metric: str = "best"):
    """Bars: each method's mean top-1 minus KD's, per pair; error bars combine the two methods'
    standard deviations over seeds (sqrt(sd_m² + sd_KD²)), drawn where both have 2+ seeds."""
    bars = []
    for table in tables.main:
        for row in table.rows:
            kd = row.cells.get("KD")
            if kd is None or not getattr(kd, metric).n:
                continue
            for method, cell in row.cells.items():
                if method in ("teacher", "CE", "KD") or not getattr(cell, metric).n:
                    continue
                ours, ref = getattr(cell, metric), getattr(kd, metric)
                err = math.hypot(ours.std, ref.std) if ours.n > 1 and ref.n > 1 else math.nan
                bars.append({"pair": f"{row.teacher}→{row.student}",
                             "dataset": pretty_dataset(row.dataset), "method": method,
                             "gain": ours.mean - ref.mean, "err": err,
                             "n": f"{ours.n}/{ref.n}"})
    if not bars:
        return None
    _style()
    data = pd.DataFrame(bars)
    pairs = list(dict.fromkeys(data["pair"]))
    methods = sorted(set(data["method"]), key=method_rank)
    width = 0.8 / len(methods)
    # room for each pair's label (the pair, then one "method n/n_KD" line per method)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 * len(pairs), 0.6 * len(pairs) * len(methods)),
                                    4.6))
    x = np.arange(len(pairs))
    for i, method in enumerate(methods):
        sub = data[data["method"] == method].set_index("pair").reindex(pairs)
        offsets = x - 0.4 + width * (i + 0.5)
        errs = sub["err"].to_numpy(dtype=float)
        ax.bar(offsets, sub["gain"].to_numpy(dtype=float), width, label=method,
               color=color(method), yerr=np.where(np.isnan(errs), 0, errs), capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    seeds = {}
    for r in bars:
        seeds.setdefault(r["pair"], []).append(f"{r['method']} {r['n']}")
    ticks = [f"{p}\nseeds (method/KD):\n" + "\n".join(seeds[p]) for p in pairs]
    ax.set_xticks(x, ticks, rotation=20 if len(pairs) > 3 else 0,
                  ha="right" if len(pairs) > 3 else "center", fontsize=8)
    ax.set_ylabel(f"{metric}-epoch top-1 − KD (points)")
    ax.set_title(f"Gain over KD per pair ({metric}-epoch top-1, mean over seeds; "
                 "error bars need 2+ seeds)", fontsize=10)
    ax.legend(title="method", fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_curves(study: Study, tables: ReportTables, max_pairs: int = 12):
    """Test top-1 per epoch from the records' histories: one panel per pair of the main tables,
    one line per method (mean over seeds, band ± one std where there are 2+ seeds)."""
    rows: list[PairRow] = [row for t in tables.main for row in t.rows][:max_pairs]
    if not rows:
        return None
    _style()
    datasets = {row.dataset for row in rows}
    cols = min(3, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        for method, cell in row.cells.items():
            if method == "teacher" or cell.runs.empty:
                continue
            curves = []
            for run_id in cell.run_ids:
                history = study.by_id[run_id].get("history", [])
                curves.append(pd.Series({h["epoch"]: h["test_top1"] for h in history}))
            table = pd.concat(curves, axis=1)
            mean = table.mean(axis=1)
            ax.plot(mean.index, mean.values, label=f"{method} (n={cell.best.n})",
                    color=color(method), marker="o" if len(mean) < 15 else None, ms=3)
            if table.shape[1] > 1:
                std = table.std(axis=1, ddof=1)
                ax.fill_between(mean.index, mean - std, mean + std, color=color(method),
                                alpha=0.15)
        teacher = row.cells.get("teacher")
        if teacher is not None and teacher.evaluated is not None and teacher.evaluated.n:
            ax.axhline(teacher.evaluated.mean, color="0.4", ls="--", lw=1, label="teacher")
        title = f"{row.teacher}→{row.student}"
        if len(datasets) > 1:
            title += f"\n{pretty_dataset(row.dataset)}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    where = f", {pretty_dataset(next(iter(datasets)))}" if len(datasets) == 1 else ""
    fig.suptitle(f"Accuracy curves (test top-1 per epoch, mean over seeds{where})")
    fig.tight_layout()
    return fig


def accuracy_vs_time(study: Study):
    """Best-epoch top-1 against training seconds per iteration, one point per run.

    Students trained together share one data stream and the teacher's forward pass; their
    record's train_seconds is the whole group's, so such points are drawn hollow."""
    frame = study.frame
    if frame.empty:
        return None
    data = frame.dropna(subset=["seconds_per_iteration", "best_top1"])
    data = data[data["section"] != "teacher"]
    if data.empty:
        return None
    _style()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    markers = "osD^vP*Xh<>p"
    names = [f"{_name(t)}→{s}" for t, s in zip(data["teacher"], data["student"], strict=True)]
    pairs = list(dict.fromkeys(names))
    for row, pair in zip(data.itertuples(), names, strict=True):
        marker = markers[pairs.index(pair) % len(markers)]
        shared = row.group_size > 1
        ax.scatter(1000 * row.seconds_per_iteration, row.best_top1, marker=marker, s=36,
                   facecolors="none" if shared else color(row.method),
                   edgecolors=color(row.method), linewidths=1.2)
    for method in sorted(set(data["method"]), key=method_rank):
        ax.scatter([], [], color=color(method), label=method)
    for i, pair in enumerate(pairs[:len(markers)]):
        ax.scatter([], [], marker=markers[i], facecolors="none", edgecolors="0.3",
                   label=pair.replace("none→", "alone: "))
    ax.set_xlabel("training time per iteration (ms; hollow: shared by the group trained together)")
    ax.set_ylabel("best-epoch test top-1 (%)")
    ax.set_title("Accuracy against time per iteration (one point per run)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return fig
