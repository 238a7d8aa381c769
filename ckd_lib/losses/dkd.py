"""Decoupled KD (Zhao et al., CVPR 2022), the value mdistiller's ``dkd_loss`` computes.

With p = softmax(z / T), target class t, binary b = (p_t, 1 - p_t) and the non-target
distribution q_k = p_k / (1 - p_t) for k != t:

    TCKD = KL(b_T || b_S),   NCKD = KL(q_T || q_S),
    L    = T^2 * mean_batch(alpha * TCKD + beta * NCKD),
    and per sample KL(p_T || p_S) = TCKD + (1 - p_t^T) * NCKD (the paper's decomposition).

Why not copy mdistiller's arithmetic: it (1) forms b by summing probabilities and takes
``log`` of the sum, which is log(0) = -inf as soon as a probability underflows, and (2) drops
the target class from q by subtracting 1000 from its scaled logit before the softmax. The
1000 is meant to be "minus infinity", but it only is while |z/T| is much smaller than 1000:
with logits of +-1e4 at T = 4 the target keeps its mass and NCKD silently becomes a different
quantity. Here everything is in log space: log b comes from logsumexp over all classes and
over the non-target classes, q from a log_softmax with the target masked by -inf (exact), and
the masked column is replaced by 0 before any product so that no 0 * inf or inf - inf can
appear, forward or backward. Needs C >= 2 (q is undefined for one class).
"""

from __future__ import annotations

import torch

from ._checks import autocast_off, check_logits_pair, check_temperature, upcast, upcast_scalar


def _check_target(target: torch.Tensor, logits: torch.Tensor, fn: str) -> None:
    if not isinstance(target, torch.Tensor) or target.dim() != 1:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"{fn}: target must be a 1-D tensor of class indices; got {shape}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{fn}: target of shape {tuple(target.shape)} does not match logits of shape "
            f"{tuple(logits.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{fn}: target must hold integer class indices; got {target.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(
            f"{fn}: needs at least 2 classes (the non-target part is empty); got logits of "
            f"shape {tuple(logits.shape)}"
        )


def dkd_components(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(tckd, nckd)``, each ``[B]``, at temperature T and *without* the T^2 factor.

    Exposed so the decomposition KL = TCKD + (1 - p_t) * NCKD can be checked and logged.
    """
    fn = "dkd_loss"
    check_logits_pair(logits_student, logits_teacher, fn)
    _check_target(target, logits_student, fn)
    check_temperature(temperature, fn)
    with autocast_off(logits_student):
        s = upcast(logits_student)
        t = upcast(logits_teacher).to(s.dtype)
        temp = upcast_scalar(temperature, s)
        index = target.long().unsqueeze(1)
        gt_mask = torch.zeros_like(s, dtype=torch.bool).scatter(1, index, True)
        zs, zt = s / temp, t / temp
        return _tckd(zs, zt, index, gt_mask), _nckd(zs, zt, gt_mask)


def _log_binary(z: torch.Tensor, index: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """``[B, 2]``: (log p_t, log(1 - p_t)) from logits z, computed without log(0)."""
    log_norm = torch.logsumexp(z, dim=1, keepdim=True)
    log_target = z.gather(1, index) - log_norm
    log_rest = torch.logsumexp(z.masked_fill(gt_mask, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_target, log_rest - log_norm], dim=1)


def _tckd(zs: torch.Tensor, zt: torch.Tensor, index, gt_mask) -> torch.Tensor:
    log_bs = _log_binary(zs, index, gt_mask)
    log_bt = _log_binary(zt, index, gt_mask)
    return (log_bt.exp() * (log_bt - log_bs)).sum(dim=1)


def _log_non_target(z: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """log q over the non-target classes; the target column is set to 0 (not -inf)."""
    masked = z.masked_fill(gt_mask, float("-inf"))
    log_q = masked - torch.logsumexp(masked, dim=1, keepdim=True)
    return log_q.masked_fill(gt_mask, 0.0)


def _nckd(zs: torch.Tensor, zt: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    log_qs = _log_non_target(zs, gt_mask)
    log_qt = _log_non_target(zt, gt_mask)
    terms = log_qt.exp() * (log_qt - log_qs)
    return terms.masked_fill(gt_mask, 0.0).sum(dim=1)


def dkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD, each x T^2 and averaged over the batch (mdistiller's value).

    The warm-up factor min(epoch / 20, 1) of mdistiller's DKD distiller belongs to the trainer.
    """
    tckd, nckd = dkd_components(logits_student, logits_teacher, target, temperature)
    with autocast_off(tckd):
        temp = upcast_scalar(temperature, tckd)
        return (alpha * tckd.mean() + beta * nckd.mean()) * temp**2
