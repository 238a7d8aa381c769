"""Figures of the visualisation and efficiency notebooks (matplotlib; seaborn for heatmaps)."""

from __future__ import annotations

import math

import numpy as np

from ckd_lib.analysis.correlation import MAX_DIFF


def _grid(n: int, size: float = 3.6, max_cols: int = 4):
    import matplotlib.pyplot as plt

    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_tsne(embeddings: dict[str, np.ndarray], labels: np.ndarray, title: str = ""):
    """One scatter per method, points coloured by class."""
    fig, axes = _grid(len(embeddings))
    classes = np.unique(labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "nipy_spectral"
    for ax, (name, points) in zip(axes, embeddings.items(), strict=False):
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, s=4, alpha=0.8,
                   vmin=classes.min(), vmax=classes.max())
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_correlation(differences: dict[str, dict], max_diff: float = MAX_DIFF, title: str = ""):
    """One heatmap of |M_student - M_teacher| per method, on a common scale [0, max_diff]."""
    import seaborn as sns

    fig, axes = _grid(len(differences))
    for ax, (name, diff) in zip(axes, differences.items(), strict=False):
        matrix = np.asarray(diff["matrix"])
        ticks = len(matrix) <= 20
        sns.heatmap(matrix, vmin=0, vmax=max_diff, cmap="PuBuGn", ax=ax, square=True,
                    xticklabels=ticks, yticklabels=ticks, cbar=True)
        ax.set_title(f"{name}\nmean {diff['mean']:.3f}, max {diff['max']:.3f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(records: list[dict], names: list[str] | None = None, title: str = ""):
    """Test top-1 and training loss per epoch, one line per run."""
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for i, record in enumerate(records):
        name = names[i] if names else f"{record['config']['method']} s{record['config']['seed']}"
        history = record["history"]
        epochs = [h["epoch"] for h in history]
        acc.plot(epochs, [h["test_top1"] for h in history], marker=".", label=name)
        total = [sum(v for k, v in h.items() if k.startswith("loss_")) for h in history]
        loss.plot(epochs, total, marker=".", label=name)
    acc.set(xlabel="epoch", ylabel="test top-1 (%)", title="test accuracy")
    loss.set(xlabel="epoch", ylabel="training loss (sum of terms)", title="training loss",
             yscale="log")
    acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_efficiency(rows: list[dict], loss_rows: list[dict] | None = None, title: str = ""):
    """Bars of ms per iteration and saved activations per method; the loss cost against batch."""
    import matplotlib.pyplot as plt

    panels = 3 if loss_rows else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8))
    methods = [r["method"] for r in rows]
    axes[0].bar(methods, [r["ms_per_iter"] for r in rows], color="#4c72b0")
    axes[0].set(ylabel="ms per iteration (median)", title="time per iteration")
    memory = [r["peak_memory_mb"] if r.get("peak_memory_mb") is not None
              else r["saved_activations_mb"] for r in rows]
    kind = "peak memory (MiB)" if rows and rows[0].get("peak_memory_mb") is not None \
        else "activations saved for backward (MiB)"
    axes[1].bar(methods, memory, color="#55a868")
    axes[1].set(ylabel=kind, title="memory")
    if loss_rows:
        for name in sorted({r["loss"] for r in loss_rows}):
            pts = [(r["batch_size"], r["ms"]) for r in loss_rows if r["loss"] == name]
            axes[2].plot(*zip(*pts, strict=True), marker="o", label=f"{name} loss")
        axes[2].set(xscale="log", yscale="log", xlabel="batch size",
                    ylabel="ms (forward + backward)", title="loss alone vs batch size")
        axes[2].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
