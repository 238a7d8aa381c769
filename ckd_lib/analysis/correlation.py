"""Teacher–student class-correlation difference (the CRD/DKD figure).

The definition follows mdistiller's ``tools/visualizations/correlation`` (used for the DKD
paper): for each model, the C×C matrix whose row c is the mean logit vector over the test samples
of class c; the figure shows ``|M_student - M_teacher|`` with the diagonal set to 0, on a colour
scale fixed at ``max_diff`` (3.0 there) so that methods compare on one scale. A smaller
difference means the student reproduces the teacher's inter-class relations more closely.
``kind="pearson"`` offers the other common reading: the difference of the C×C Pearson correlation
matrices of the class logits over the test set.
"""

from __future__ import annotations

import numpy as np

MAX_DIFF = 3.0  # mdistiller's common colour-scale maximum


def class_mean_logits(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]``: row c is the mean logit vector of the samples labelled c (NaN if none)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    sums = np.zeros((num_classes, logits.shape[1]))
    np.add.at(sums, labels, logits)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def correlation_difference(student_logits: np.ndarray, teacher_logits: np.ndarray,
                           labels: np.ndarray | None = None, num_classes: int | None = None,
                           kind: str = "mean_logits") -> dict:
    """``{"matrix": [C, C] absolute difference with zero diagonal, "mean": off-diagonal mean,
    "max": off-diagonal max}`` between a student's and its teacher's logits on the same inputs.
    """
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"student and teacher logits must be [N, C] of one shape, got {s.shape} "
                         f"and {t.shape}")
    num_classes = num_classes or s.shape[1]
    if kind == "mean_logits":
        if labels is None:
            raise ValueError("kind='mean_logits' needs the labels")
        diff = np.abs(class_mean_logits(s, labels, num_classes)
                      - class_mean_logits(t, labels, num_classes))
    elif kind == "pearson":
        diff = np.abs(np.corrcoef(s, rowvar=False) - np.corrcoef(t, rowvar=False))
    else:
        raise ValueError(f"kind={kind!r}; accepted: 'mean_logits', 'pearson'")
    np.fill_diagonal(diff, 0.0)
    off = diff[~np.eye(len(diff), dtype=bool)]
    return {"matrix": diff, "mean": float(np.nanmean(off)) if off.size else 0.0,
            "max": float(np.nanmax(off)) if off.size else 0.0, "kind": kind}
