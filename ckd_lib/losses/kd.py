"""Hinton KD, computed as mdistiller's ``kd_loss`` (the study's KD baseline).

    L = T^2 * mean_b sum_c p_T[b, c] * (log p_T[b, c] - log p_S[b, c]),
    p = softmax(z / T) over classes.

Both log-probabilities come from ``log_softmax`` (never ``log(softmax)``), so for logits of
+-1e4 every term stays finite; a teacher probability that underflows to 0 contributes 0, as in
``F.kl_div``. The T^2 factor keeps the gradient scale independent of T (Hinton et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import autocast_off, check_logits_pair, check_temperature, upcast, upcast_scalar


def kd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """KL(teacher || student) at temperature T, summed over classes, mean over batch, x T^2."""
    check_logits_pair(logits_student, logits_teacher, "kd_loss")
    check_temperature(temperature, "kd_loss")
    with autocast_off(logits_student):
        s = upcast(logits_student)
        t = upcast(logits_teacher).to(s.dtype)
        temp = upcast_scalar(temperature, s)
        log_p_student = F.log_softmax(s / temp, dim=1)
        log_p_teacher = F.log_softmax(t / temp, dim=1)
        per_sample = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
        return per_sample.mean() * temp**2
