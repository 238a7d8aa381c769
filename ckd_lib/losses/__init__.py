"""Distillation losses: CKD (the study's method) and the KD, DKD and ReviewKD baselines.

Plain functions on logits, student first and teacher second (docs/CONTRACTS.md). Every loss
computes in at least float32 even under bf16 autocast, validates shapes with a clear
ValueError, and avoids host syncs and value-dependent branches (CUDA-graph friendly).
"""

from .ckd import CKD_NEGATIVES, ckd_loss, ckd_similarity
from .dkd import dkd_components, dkd_loss
from .kd import kd_loss
from .reviewkd import ABF, FPNReviewKD, ReviewKD, hcl_loss, reviewkd_features
from .temperature import LearnableTemperature

__all__ = [
    "ABF",
    "CKD_NEGATIVES",
    "FPNReviewKD",
    "LearnableTemperature",
    "ReviewKD",
    "ckd_loss",
    "ckd_similarity",
    "dkd_components",
    "dkd_loss",
    "hcl_loss",
    "kd_loss",
    "reviewkd_features",
]

from .distributed import (  # noqa: E402
    CKD_NEGATIVES_SCOPES,
    all_gather_with_grad,
    ckd_loss_distributed,
    distributed_world,
)

__all__ += [
    "CKD_NEGATIVES_SCOPES",
    "all_gather_with_grad",
    "ckd_loss_distributed",
    "distributed_world",
]
