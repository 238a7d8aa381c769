"""CKD: contrastive knowledge distillation on logits, sample-wise (Zhu et al., 2404.14109).

Default behaviour is exactly the authors' code (ZhouXinzzzzz/CKD, ``contrastive_loss``):

    t_hat_i = t_i / max(||t_i||, 1e-12),  s_hat_i = s_i / max(||s_i||, 1e-12)
    S[i, j] = t_hat_i . s_hat_j          (rows: teacher anchors, columns: students)
    L = mean_i CE(S[i, :] / tau, target=i) = mean_i [logsumexp_j S[i, j]/tau - S[i, i]/tau]

No centring, no softmax, no KD temperature: any positive scale of a logit vector (and so a
logit temperature) cancels in the normalisation. The variants exist for the study's ablations;
each is a keyword so that an ablation row is one changed argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    autocast_off,
    check_bool,
    check_logits_pair,
    check_temperature,
    upcast,
    upcast_scalar,
)

CKD_NEGATIVES = ("teacher", "student")
"""Accepted values of ``negatives``: which pairs form the off-diagonal (negative) entries."""

NORMALIZE_EPS = 1e-12
"""As ``F.normalize``'s default, which the authors' code uses."""


def check_ckd_options(negatives, symmetric, positive_only, chunk_size) -> None:
    fn = "ckd_loss"
    if not isinstance(negatives, str) or negatives not in CKD_NEGATIVES:
        raise ValueError(f"{fn}: negatives={negatives!r} is not one of {CKD_NEGATIVES}")
    check_bool(symmetric, fn, "symmetric")
    check_bool(positive_only, fn, "positive_only")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{fn}: chunk_size={chunk_size!r} must be None or an int >= 1")
    if positive_only and (negatives != "teacher" or symmetric or chunk_size is not None):
        # positive_only has no negatives at all; silently ignoring these would mislabel an
        # ablation row, so the combination is refused.
        raise ValueError(
            f"{fn}: positive_only=True uses no negatives, so negatives must stay 'teacher', "
            f"symmetric False and chunk_size None; got negatives={negatives!r}, "
            f"symmetric={symmetric!r}, chunk_size={chunk_size!r}"
        )


def ckd_similarity(
    logits_student: torch.Tensor, logits_teacher: torch.Tensor, negatives: str = "teacher"
) -> torch.Tensor:
    """The B x B cosine matrix whose row i is the i-th contrastive problem (before 1/tau).

    ``negatives="teacher"`` (authors' code): M[i, j] = t_hat_i . s_hat_j.
    ``negatives="student"`` (the paper-text reading): M[i, i] = t_hat_i . s_hat_i and
    M[i, j] = s_hat_i . s_hat_j for j != i (student-student negatives).
    Computed in at least float32; exposed for analysis (e.g. plotting the matrix).
    """
    check_logits_pair(logits_student, logits_teacher, "ckd_similarity")
    if not isinstance(negatives, str) or negatives not in CKD_NEGATIVES:
        raise ValueError(f"ckd_similarity: negatives={negatives!r} is not one of {CKD_NEGATIVES}")
    with autocast_off(logits_student):
        return _similarity(upcast(logits_student), upcast(logits_teacher), negatives)


def _similarity(s: torch.Tensor, t: torch.Tensor, negatives: str) -> torch.Tensor:
    s_hat = F.normalize(s, dim=1, eps=NORMALIZE_EPS)
    t_hat = F.normalize(t.to(s.dtype), dim=1, eps=NORMALIZE_EPS)
    if negatives == "teacher":
        return t_hat @ s_hat.t()
    positives = (t_hat * s_hat).sum(dim=1)
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return torch.where(eye, positives.unsqueeze(1), s_hat @ s_hat.t())


def _off_chunk_mask(batch: int, chunk_size: int, device: torch.device) -> torch.Tensor:
    """True where samples i and j lie in different consecutive chunks of ``chunk_size``."""
    chunk_id = torch.arange(batch, device=device) // chunk_size
    return chunk_id.unsqueeze(1) != chunk_id.unsqueeze(0)


def ckd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    negatives: str = "teacher",
    symmetric: bool = False,
    positive_only: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Contrastive KD loss on logits; returns a 0-d tensor (float32 for bf16/fp16 input).

    Args:
        logits_student, logits_teacher: ``[B, C]``. Student first, as every loss here.
        temperature: tau > 0, a number or a 0-d tensor (e.g. ``LearnableTemperature()()``).
        negatives: ``"teacher"`` (authors' code) or ``"student"``; see ``ckd_similarity``.
        symmetric: CLIP-style, 0.5 * (row-wise CE + column-wise CE) of the same matrix M/tau;
            the column-wise CE anchors each student j against all teachers. With
            ``negatives="student"`` M is symmetric off the diagonal, so both halves coincide.
        positive_only: no inter-sample contrast: mean_i (1 - t_hat_i . s_hat_i) / tau. Its
            gradient w.r.t. the logits equals that of the CE's positive term -S[i, i]/tau (the
            "1" is a constant that makes the loss >= 0). Not meant for a learnable tau: it
            would only push tau up.
        chunk_size: contrast only within consecutive chunks of k samples (the last may be
            smaller); the result is the mean over all B samples, i.e. the per-chunk losses
            weighted by chunk size. ``chunk_size >= B`` is the full loss. Implemented as a
            block-diagonal -inf mask on the one B x B matrix, so shapes stay static.

    Each row's CE keeps its own diagonal, so no row is ever fully masked and the loss stays
    finite (for B = 1 it is exactly 0).
    """
    check_ckd_options(negatives, symmetric, positive_only, chunk_size)
    check_logits_pair(logits_student, logits_teacher, "ckd_loss")
    check_temperature(temperature, "ckd_loss")
    batch = logits_student.shape[0]
    with autocast_off(logits_student):
        s = upcast(logits_student)
        t = upcast(logits_teacher).to(s.dtype)
        tau = upcast_scalar(temperature, s)
        if positive_only:
            s_hat = F.normalize(s, dim=1, eps=NORMALIZE_EPS)
            t_hat = F.normalize(t, dim=1, eps=NORMALIZE_EPS)
            return ((1.0 - (t_hat * s_hat).sum(dim=1)) / tau).mean()
        logits = _similarity(s, t, negatives) / tau
        if chunk_size is not None and chunk_size < batch:
            mask = _off_chunk_mask(batch, chunk_size, logits.device)
            logits = logits.masked_fill(mask, float("-inf"))
        diagonal = logits.diagonal()
        row_wise = (torch.logsumexp(logits, dim=1) - diagonal).mean()
        if not symmetric:
            return row_wise
        column_wise = (torch.logsumexp(logits, dim=0) - diagonal).mean()
        return 0.5 * (row_wise + column_wise)
