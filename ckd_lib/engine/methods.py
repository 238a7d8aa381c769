"""Training objectives: each method turns student and teacher outputs into named loss terms.

A method is an nn.Module because some carry parameters that train with the student (a learnable
CKD temperature, the ReviewKD connectors). It returns a dict of terms whose sum is the loss, so
the history logs every term separately. Per-epoch scalars (the warm-up factor) arrive as a device
tensor, which keeps the whole step capturable in a CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ckd_lib import losses
from ckd_lib.config import RunConfig


class Objective(nn.Module):
    """Base class: `needs_features` says whether forward_features outputs are required."""

    needs_features = False
    warmup_epochs: int | None = None
    terms: tuple[str, ...] = ("ce",)

    def __init__(self, params: dict):
        super().__init__()
        self.params = params

    def ce(self, logits_student, target):
        """Cross-entropy in at least float32 (bf16 logits are upcast, float64 kept)."""
        if logits_student.dtype in (torch.float16, torch.bfloat16):
            logits_student = logits_student.float()
        return self.params["ce_weight"] * F.cross_entropy(logits_student, target)

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class CrossEntropy(Objective):
    """The student (or teacher) alone: ce_weight · CE(s, y)."""

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        return {"ce": self.ce(logits_student, target)}


class KnowledgeDistillation(Objective):
    """Hinton KD as mdistiller: ce_weight · CE + kd_weight · T² · KL(teacher ‖ student)."""

    terms = ("ce", "kd")

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        p = self.params
        kd = losses.kd_loss(logits_student, logits_teacher, p["temperature"])
        return {"ce": self.ce(logits_student, target), "kd": p["kd_weight"] * kd}


class DecoupledKD(Objective):
    """DKD: ce_weight · CE + warm-up · (α·TCKD + β·NCKD), warm-up linear over warmup_epochs."""

    terms = ("ce", "dkd")

    def __init__(self, params):
        super().__init__(params)
        self.warmup_epochs = params["warmup_epochs"]

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        p = self.params
        dkd = losses.dkd_loss(logits_student, logits_teacher, target, p["alpha"], p["beta"],
                              p["temperature"])
        return {"ce": self.ce(logits_student, target), "dkd": factor * dkd}


class ContrastiveKD(Objective):
    """CKD: ce_weight · CE + cl_weight · L_CKD, with the variants selected by loss parameters."""

    terms = ("ce", "ckd")

    def __init__(self, params):
        super().__init__(params)
        self.temperature = (losses.LearnableTemperature(init=params["temperature"])
                            if params["learnable_temperature"] else None)

    def tau(self):
        return self.params["temperature"] if self.temperature is None else self.temperature()

    def ckd(self, logits_student, logits_teacher):
        p = self.params
        if p["negatives_scope"] == "global":  # all-gather across DDP ranks (equal batches)
            return p["cl_weight"] * losses.ckd_loss_distributed(
                logits_student, logits_teacher, "global", temperature=self.tau(),
                negatives=p["negatives"], symmetric=p["symmetric"],
                positive_only=p["positive_only"], chunk_size=p["chunk_size"], check_shapes=False)
        return p["cl_weight"] * losses.ckd_loss(
            logits_student, logits_teacher, temperature=self.tau(), negatives=p["negatives"],
            symmetric=p["symmetric"], positive_only=p["positive_only"],
            chunk_size=p["chunk_size"])

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        return {"ce": self.ce(logits_student, target),
                "ckd": self.ckd(logits_student, logits_teacher)}


class ContrastiveKDWithReview(ContrastiveKD):
    """CKD + ReviewKD's feature loss, both distillation terms warmed up linearly together."""

    needs_features = True
    terms = ("ce", "ckd", "reviewkd")

    def __init__(self, params, student: nn.Module, teacher: nn.Module):
        super().__init__(params)
        self.warmup_epochs = params["warmup_epochs"]
        self.review = losses.ReviewKD.for_models(student, teacher)

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        fused = self.review(losses.reviewkd_features(feats_student))
        review = losses.hcl_loss(fused, losses.reviewkd_features(feats_teacher, preact=True))
        return {"ce": self.ce(logits_student, target),
                "ckd": factor * self.ckd(logits_student, logits_teacher),
                "reviewkd": factor * self.params["reviewkd_weight"] * review}


class KDPlusCKD(ContrastiveKD):
    """KD and CKD together: ce_weight · CE + kd_weight · KD(kd_temperature) + cl_weight · L_CKD."""

    terms = ("ce", "kd", "ckd")

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None):
        p = self.params
        kd = losses.kd_loss(logits_student, logits_teacher, p["kd_temperature"])
        return {"ce": self.ce(logits_student, target), "kd": p["kd_weight"] * kd,
                "ckd": self.ckd(logits_student, logits_teacher)}


class StudentStep(nn.Module):
    """A student and its objective as one module: what DistributedDataParallel wraps.

    Wrapping both keeps the objective's own parameters (ReviewKD connectors, a learnable τ) in
    DDP's gradient averaging, so every rank applies the same update.
    """

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x, target, logits_teacher, feats_teacher, factor):
        if self.objective.needs_features:
            logits, feats = self.model.forward_features(x)
        else:
            logits, feats = self.model(x), None
        terms = self.objective(logits, logits_teacher, target, factor, feats, feats_teacher)
        return logits, terms


def build_objective(config: RunConfig, student: nn.Module, teacher: nn.Module | None) -> Objective:
    """The objective of `config.method`, with the method defaults updated by `config.loss`."""
    params = config.loss_params()
    simple = {"CE": CrossEntropy, "KD": KnowledgeDistillation, "DKD": DecoupledKD,
              "CKD": ContrastiveKD, "KD+CKD": KDPlusCKD}
    if config.method in simple:
        return simple[config.method](params)
    if config.method == "CKD+ReviewKD":
        return ContrastiveKDWithReview(params, student, teacher)
    raise ValueError(f"unknown method {config.method!r}; accepted: {sorted(simple)} + "
                     "['CKD+ReviewKD']")
