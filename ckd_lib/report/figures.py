"""The report's figures, drawn from run records and from the data of the notebooks' artifacts.

Each function returns a matplotlib Figure, or None when there is nothing to draw; the notebook
displays it, so it ends up as a PNG inside the HTML report. Every figure takes its method colours,
method order and pair names from ``ckd_lib.report.palette``, so a method has one colour and a
pair one name across the report. Legends sit outside the axes (they never cover data), epoch
axes have integer ticks, and log axes are labelled with plain numbers.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from ckd_lib.report.collect import Study, pretty_dataset
from ckd_lib.report.palette import method_color, method_rank, pair_label, sort_methods
from ckd_lib.report.tables import PairRow, ReportTables, equal_budget_deltas


def _style():
    try:  # seaborn only styles the figures; they draw without it
        import seaborn as sns
    except ImportError:  # pragma: no cover
        return
    sns.set_theme(style="whitegrid", context="notebook")


def _plain(value, _pos=None) -> str:
    """A log-axis tick as a plain number: 0.05, 0.225, 2, 1,024 (not 5×10⁻²), with three
    significant digits, so the close ticks matplotlib falls back to on an axis spanning less
    than a decade (0.18, 0.2, 0.22, ...) keep distinct labels."""
    if value <= 0:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    decimals = 2 - math.floor(math.log10(value))
    return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")


def _log_axis(axis, ticks=None) -> None:
    """Readable ticks on a log axis: the given values (e.g. the batch sizes measured), or the
    1-2-5 steps inside the data, printed as plain numbers."""
    if ticks is not None:
        axis.set_major_locator(FixedLocator(list(ticks)))
    else:
        from matplotlib.ticker import LogLocator

        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _method_handles(methods) -> list[Patch]:
    return [Patch(facecolor=method_color(m), label=m) for m in sort_methods(methods)]


# -- gain over KD ----------------------------------------------------------------------------------
def gain_bars(tables: ReportTables, metric: str = "last") -> pd.DataFrame:
    """Each method's seed-paired difference to KD per pair of the main tables, with its 95 %
    interval: at each equal budget (optimizer steps and images) the matched-budget runs hold,
    and as the main table compares them (each at its own recipe; ``matched`` False, and
    ``equal`` says whether that happened to be an equal budget)."""
    bars = []
    for table in tables.main:
        for row in table.rows:
            for method, cell in row.cells.items():
                if method in ("teacher", "CE", "KD") or "KD" not in cell.deltas:
                    continue
                d = cell.deltas["KD"]
                diff = d.get(metric)
                common = {"pair": row.pair, "dataset": row.dataset, "method": method}
                bars.append({**common, "gain": diff.mean, "err": diff.half_width,
                             "n": diff.n, "budget": cell.budget.text(),
                             "kd_budget": row.cells["KD"].budget.text(), "matched": False,
                             "equal": bool(d.equal_budget), "where": "own recipes"})
                for budget, md in equal_budget_deltas(row, method, "KD"):
                    diff = md.get(metric)
                    bars.append({**common, "gain": diff.mean, "err": diff.half_width,
                                 "n": diff.n, "budget": budget.text(), "kd_budget": budget.text(),
                                 "matched": True, "equal": True,
                                 "where": budget.parts()[2]})
    return pd.DataFrame(bars)


def _budgets_text(data: pd.DataFrame) -> str:
    """"CKD at 4 ep cosine ..., DKD at ...; KD at ...": the budgets of the bars as the main
    tables compare them ("all at ..." when they are one)."""
    own = data[~data["matched"]]
    budgets = set(own["budget"]) | set(own["kd_budget"])
    if len(budgets) == 1:
        return f"all at {budgets.pop()}"
    parts = []
    for method in sort_methods(own["method"]):
        budgets = sorted(set(own[own["method"] == method]["budget"]))
        parts.append(f"{method} at {' or '.join(budgets)}")
    kd = sorted(set(own["kd_budget"]))
    return ", ".join(parts) + f"; KD at {' or '.join(kd)}"


def gain_over_kd(tables: ReportTables, metric: str = "last"):
    """Bars of each method's seed-paired gain over KD per pair, with 95 % interval whiskers.
    Solid: both at an equal budget in optimizer steps and images (matched-budget runs, or own
    recipes that happen to be equal). Faded and hatched: each at its own recipe with unequal
    budgets, as the main table's Δ column; the title says so."""
    data = gain_bars(tables, metric)
    if data.empty:
        return None
    _style()
    pairs = list(dict.fromkeys(data["pair"]))
    data["slot"] = [(method_rank(m), not eq, b) for m, b, eq in
                    zip(data["method"], data["budget"], data["equal"], strict=True)]
    data = data.sort_values("slot", kind="stable")
    unequal = data[~data["equal"]]
    most = int(data.groupby("pair").size().max())
    width = 0.8 / most
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(pairs) * most + 2.5), 5.4),
                           layout="constrained")
    x = np.arange(len(pairs))
    tops = []
    for centre, pair in zip(x, pairs, strict=True):
        bars = data[data["pair"] == pair]
        offsets = centre + (np.arange(len(bars)) - (len(bars) - 1) / 2) * width
        for offset, bar in zip(offsets, bars.itertuples(), strict=True):
            colour = method_color(bar.method)
            ax.bar(offset, bar.gain, width, color=colour, alpha=1 if bar.equal else 0.35,
                   hatch=None if bar.equal else "///", edgecolor=colour if bar.equal else "0.3")
            end = bar.gain
            if math.isfinite(bar.err):  # an interval needs 2+ common seeds
                ax.errorbar(offset, bar.gain, yerr=bar.err, fmt="none", ecolor="black",
                            elinewidth=1, capsize=3)
                end = bar.gain + (bar.err if bar.gain >= 0 else -bar.err)
            tops.append(end)
            # the value sits beyond the whisker's cap, never on it
            ax.annotate(f"{bar.gain:+.2f}\nn={bar.n}\n{bar.where}", (offset, end),
                        xytext=(0, 4 if bar.gain >= 0 else -4), textcoords="offset points",
                        ha="center", va="bottom" if bar.gain >= 0 else "top", fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    low, high = min(tops + [0.0]), max(tops + [0.0])
    pad = 0.25 * max(high - low, 1e-6)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(x, pairs, fontsize=8)
    ax.set_ylabel(f"{metric}-epoch top-1 − KD (points), seed-paired")
    datasets = sorted({pretty_dataset(d) for d in data["dataset"]})
    title = (f"Gain over KD per pair, {', '.join(datasets)} ({metric}-epoch top-1; whiskers: "
             "95 % t interval over the common seeds)\nsolid: method and KD at an EQUAL budget "
             "(optimizer steps and images)")
    if not unequal.empty:
        title += f"\nhatched: UNEQUAL budgets, each at its own recipe ({_budgets_text(data)})"
    ax.set_title(title, fontsize=9)
    handles = _method_handles(data["method"])
    handles.append(Patch(facecolor="0.5", edgecolor="0.5", label="equal budget"))
    if not unequal.empty:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="///", alpha=0.6,
                             label="unequal budgets (own recipes)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               fontsize=8)
    return fig


# -- curves from the records ---------------------------------------------------------------------
def _history_frame(study: Study, run_ids: list[str], value) -> pd.DataFrame:
    """One column per run, indexed by epoch: `value(history entry)`."""
    curves = [pd.Series({h["epoch"]: value(h) for h in study.by_id[rid].get("history", [])})
              for rid in run_ids]
    return pd.concat(curves, axis=1)


def _panels(n: int, width: float = 4.6, height: float = 3.4):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.8),
                             squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _pair_title(row: PairRow, several_datasets: bool) -> str:
    return row.pair + (f"\n{pretty_dataset(row.dataset)}" if several_datasets else "")


def _pair_panels(tables: ReportTables, max_pairs: int):
    """The main tables' first ``max_pairs`` rows, their datasets, and one panel per row (None
    when the tables have no row)."""
    rows: list[PairRow] = [row for t in tables.main for row in t.rows][:max_pairs]
    if not rows:
        return None
    _style()
    fig, axes = _panels(len(rows))
    return rows, {row.dataset for row in rows}, fig, axes


def _trained_cells(row: PairRow):
    """(method, cell) of the row's methods that have runs (the teacher column left out)."""
    return [(m, cell) for m, cell in row.cells.items() if m != "teacher" and not cell.runs.empty]


def accuracy_curves(study: Study, tables: ReportTables, max_pairs: int = 12):
    """Test top-1 per epoch from the records' histories: one panel per pair of the main tables,
    one line per method (mean over seeds, band ± one std where there are 2+ seeds)."""
    panels = _pair_panels(tables, max_pairs)
    if panels is None:
        return None
    rows, datasets, fig, axes = panels
    methods = set()
    for ax, row in zip(axes, rows, strict=True):
        for method, cell in _trained_cells(row):
            methods.add(method)
            table = _history_frame(study, cell.run_ids, lambda h: h["test_top1"])
            mean = table.mean(axis=1)
            ax.plot(mean.index, mean.values, color=method_color(method),
                    marker="o" if len(mean) < 15 else None, ms=3)
            if table.shape[1] > 1:
                std = table.std(axis=1, ddof=1)
                ax.fill_between(mean.index, mean - std, mean + std, color=method_color(method),
                                alpha=0.15)
        teacher = row.cells.get("teacher")
        if teacher is not None and teacher.evaluated is not None and teacher.evaluated.n:
            ax.axhline(teacher.evaluated.mean, color=method_color("teacher"), ls="--", lw=1)
        ax.set_title(_pair_title(row, len(datasets) > 1), fontsize=10)
        _epoch_axis(ax)
        ax.set_ylabel("test top-1 (%)")
    where = f", {pretty_dataset(next(iter(datasets)))}" if len(datasets) == 1 else ""
    handles = _method_handles(methods) + [plt.Line2D([], [], color=method_color("teacher"),
                                                     ls="--", label="teacher (measured)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"Test top-1 per epoch (mean over seeds, band ± 1 std with 2+ seeds{where})")
    return fig


def _total_loss(entry: dict) -> float:
    return sum(v for k, v in entry.items() if k.startswith("loss_"))


def loss_curves(study: Study, tables: ReportTables, max_pairs: int = 12):
    """Training loss per epoch, each method's divided by its own first-epoch value, one panel
    per pair. The methods' losses are on different scales (CKD's contrastive term starts near
    40, the others between 1 and 8), so raw values on one axis would flatten all but CKD; each
    panel's title gives the raw first-epoch values."""
    panels = _pair_panels(tables, max_pairs)
    if panels is None:
        return None
    rows, datasets, fig, axes = panels
    methods = set()
    for ax, row in zip(axes, rows, strict=True):
        firsts = []
        for method, cell in _trained_cells(row):
            methods.add(method)
            mean = _history_frame(study, cell.run_ids, _total_loss).mean(axis=1)
            first = float(mean.iloc[0])
            firsts.append(f"{method} {first:.3g}")
            ax.plot(mean.index, mean.values / first, color=method_color(method),
                    marker="o" if len(mean) < 15 else None, ms=3)
        ax.axhline(1, color="0.6", lw=0.8)
        ax.set_title(_pair_title(row, len(datasets) > 1) + "\nepoch-1 loss: " +
                     ", ".join(firsts), fontsize=8.5)
        _epoch_axis(ax)
        ax.set_ylabel("loss ÷ its epoch-1 value")
    fig.legend(handles=_method_handles(methods), loc="outside lower center", ncol=len(methods),
               fontsize=8)
    fig.suptitle("Training loss per epoch (sum of the method's terms, mean over seeds), each "
                 "method divided by its own epoch-1 value", fontsize=10)
    return fig


def run_curves(records: list[dict], names: list[str]):
    """Test top-1 and training loss (÷ its epoch-1 value, as in :func:`loss_curves`) per epoch
    of a few runs, one line each in its method's colour: notebook 60's curves of one pair."""
    if not records:
        return None
    _style()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 3.9), layout="constrained")
    for record, name in zip(records, names, strict=True):
        history = record.get("history") or []
        epochs = [h["epoch"] for h in history]
        colour = method_color(record["config"]["method"])
        acc.plot(epochs, [h["test_top1"] for h in history], marker=".", color=colour, label=name)
        total = [_total_loss(h) for h in history]
        if total and total[0]:
            loss.plot(epochs, [t / total[0] for t in total], marker=".", color=colour)
    acc.set(ylabel="test top-1 (%)", title="test accuracy")
    loss.set(ylabel="loss ÷ its epoch-1 value", title="training loss (sum of the terms)")
    loss.axhline(1, color="0.6", lw=0.8)
    for ax in (acc, loss):
        _epoch_axis(ax)
    fig.legend(loc="outside right upper", fontsize=8)
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
    fig, ax = plt.subplots(figsize=(8.5, 4.4), layout="constrained")
    markers = "osD^vP*Xh<>p"
    names = [pair_label(t, s) for t, s in zip(data["teacher"], data["student"], strict=True)]
    pairs = list(dict.fromkeys(names))
    for row, pair in zip(data.itertuples(), names, strict=True):
        marker = markers[pairs.index(pair) % len(markers)]
        shared = row.group_size > 1
        ax.scatter(1000 * row.seconds_per_iteration, row.best_top1, marker=marker, s=36,
                   facecolors="none" if shared else method_color(row.method),
                   edgecolors=method_color(row.method), linewidths=1.2)
    handles = [plt.Line2D([], [], ls="", marker="o", color=method_color(m), label=m)
               for m in sort_methods(data["method"])]
    handles += [plt.Line2D([], [], ls="", marker=markers[i], markerfacecolor="none",
                           markeredgecolor="0.3", label=pair)
                for i, pair in enumerate(pairs[:len(markers)])]
    ax.set_xlabel("training time per iteration (ms; hollow: shared by the group trained together)")
    ax.set_ylabel("best-epoch test top-1 (%)")
    ax.set_title("Accuracy against time per iteration (one point per run)")
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


# -- figures from the artifacts' data ------------------------------------------------------------
def efficiency_figure(data: dict):
    """Time per iteration and memory per method, and the loss alone against the batch size (log
    axes, ticks at the batch sizes measured), from notebook 50's efficiency.json."""
    rows = sorted(data.get("rows") or [], key=lambda r: method_rank(r["method"]))
    if not rows:
        return None
    _style()
    loss_rows = data.get("loss_rows") or []
    fig, axes = plt.subplots(1, 3 if loss_rows else 2, figsize=(13 if loss_rows else 9, 3.9),
                             layout="constrained")
    methods = [r["method"] for r in rows]
    colors = [method_color(m) for m in methods]
    medians = [r["ms_per_iter"] for r in rows]
    axes[0].bar(methods, medians, color=colors)
    if all(r.get("ms_per_iter_min") is not None and r.get("ms_per_iter_max") is not None
           for r in rows):  # the spread over the interleaved rounds
        spread = [[m - r["ms_per_iter_min"] for m, r in zip(medians, rows, strict=True)],
                  [r["ms_per_iter_max"] - m for m, r in zip(medians, rows, strict=True)]]
        axes[0].errorbar(methods, medians, yerr=np.clip(spread, 0, None), fmt="none",
                         ecolor="black", elinewidth=1, capsize=3)
    noisy = rows[0].get("noisy")
    axes[0].set(ylabel="ms per iteration (median)\nwhiskers: fastest–slowest round",
                title="time per training iteration" + ("\nNOISY: ordering cannot be true"
                                                       if noisy else ""))
    peak = all(r.get("peak_memory_mb") is not None for r in rows)
    memory = [r["peak_memory_mb"] if peak else r["saved_activations_mb"] for r in rows]
    axes[1].bar(methods, memory, color=colors)
    axes[1].set(ylabel="peak memory (MiB)" if peak else "activations saved for backward (MiB)",
                title="memory")
    if loss_rows:
        ax = axes[2]
        batches = sorted({int(r["batch_size"]) for r in loss_rows})
        for name in sort_methods(r["loss"] for r in loss_rows):
            pts = sorted((int(r["batch_size"]), r["ms"]) for r in loss_rows if r["loss"] == name)
            ax.plot(*zip(*pts, strict=True), marker="o", color=method_color(name),
                    label=f"{name} loss")
        ax.set(xscale="log", yscale="log", xlabel="batch size",
               ylabel="ms (forward + backward, median)", title="the loss alone")
        _log_axis(ax.xaxis, batches)
        _log_axis(ax.yaxis)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    device = {str(r.get("device")) for r in rows}
    fig.suptitle(f"Training cost per method ({', '.join(sorted(device))}, batch "
                 f"{rows[0].get('batch_size')}, random inputs)", fontsize=10)
    return fig


def class_names(dataset: str | None, labels) -> list[str]:
    """Names of the classes in `labels` where the library knows them (Fashion-MNIST), else the
    class indices."""
    classes = sorted({int(v) for v in labels})
    known = None
    if dataset and str(dataset).split(":", 1)[0] == "fashion_mnist":
        from ckd_lib.data.fashion_mnist import CLASSES as known
    if known is not None and max(classes) < len(known):
        return [f"{c}: {known[c]}" for c in classes]
    return [f"class {c}" for c in classes]


def tsne_figure(data: dict):
    """One t-SNE scatter per student, points coloured by class, with the class legend below
    (up to 20 classes; beyond that the colours are not distinguishable and the caption says so).
    """
    points = data.get("points") or {}
    labels = np.asarray(data.get("labels") or [])
    if not points or not len(labels):
        return None
    _style()
    names = sort_methods(points)
    classes = sorted({int(v) for v in labels})
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20
                        else "nipy_spectral")
    colour = {c: cmap(i / max(1, len(classes) - 1)) if len(classes) > 20 else cmap(i)
              for i, c in enumerate(classes)}
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 4.3), squeeze=False,
                             layout="constrained")
    for ax, name in zip(axes.flat, names, strict=True):
        xy = np.asarray(points[name])
        ax.scatter(xy[:, 0], xy[:, 1], c=[colour[int(v)] for v in labels], s=4, alpha=0.8)
        ax.set_title(name, color=method_color(name), fontweight="bold")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 20:
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[c], label=text)
                   for c, text in zip(classes, class_names(data.get("dataset"), labels),
                                      strict=True)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
                   fontsize=8, title="class")
    return fig


def correlation_figure(data: dict):
    """|class-correlation of the student − the teacher's| per student, on one colour scale that
    reaches the largest value drawn (mdistiller's fixed scale, ``max_diff``, is kept when no
    value exceeds it; otherwise the colour bar says it was widened rather than clip)."""
    students = data.get("students") or {}
    if not students:
        return None
    _style()
    names = sort_methods(students)
    observed = max(float(np.max(students[n]["matrix"])) for n in names)
    fixed = data.get("max_diff")
    vmax = max(fixed or 0.0, observed)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 1.2, 3.9), squeeze=False,
                             layout="constrained")
    image = None
    for ax, name in zip(axes.flat, names, strict=True):
        entry = students[name]
        matrix = np.asarray(entry["matrix"], dtype=float)
        image = ax.imshow(matrix, vmin=0, vmax=vmax, cmap="PuBuGn")
        ax.set_title(f"{name}\nmean {entry['mean']:.3f}, max {entry['max']:.3f}", fontsize=9,
                     color=method_color(name))
        ax.grid(False)
        step = 1 if len(matrix) <= 10 else 2 if len(matrix) <= 20 else \
            int(math.ceil(len(matrix) / 5 / 10.0)) * 10
        ticks = list(range(0, len(matrix), step))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("class", fontsize=9)
        ax.set_ylabel("class", fontsize=9)
    label = "|student − teacher| class correlation"
    if fixed and observed > fixed:
        label += f"\n(scale widened to {vmax:.2g}: values exceed {fixed:g})"
    fig.colorbar(image, ax=list(axes.flat), shrink=0.85, label=label)
    return fig
