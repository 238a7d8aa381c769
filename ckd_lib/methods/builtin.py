"""The study's terms (CE, KD, DKD, CKD, ReviewKD) and methods, registered like any plugin's.

Every term returns its weighted value from the pure loss functions of :mod:`ckd_lib.losses`
(whose docstrings hold the formulas). The methods keep the parameter names and defaults the
study has always used, so existing configs keep their hashes and run ids:

- classification (mdistiller / CKD code, CIFAR-100 defaults; recipes override them cell by
  cell): CE; KD (CE 0.1 + KD 0.9, T 4); DKD (α 1, β 8, T 4, 20 warm-up epochs); CKD (CE 1 +
  cl_weight 10 · L_CKD, τ 1); the ablation sums KD+CKD and CKD+ReviewKD (both warmed up);
- detection (on the RoI head's logits of the student's sampled proposals; see
  :mod:`ckd_lib.detection.distill`): the detector alone ("baseline"), KD, DKD (β 0.25, T 1),
  CKD (weight 0.1, τ 1), ReviewKD on the FPN levels, and the paper's ReviewKD+X sums. The
  authors apply no warm-up on detection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ckd_lib import losses
from ckd_lib.losses.distributed import CKD_NEGATIVES_SCOPES
from ckd_lib.methods.params import Param
from ckd_lib.methods.registry import (
    PALETTE,
    TermContext,
    TermInputs,
    TermModule,
    register_method,
    register_term,
    use,
)


# -- terms -------------------------------------------------------------------------------------
def cross_entropy(inputs: TermInputs, p: dict):
    """ce_weight · CE(s, y), in at least float32 (bf16 logits are upcast, float64 kept)."""
    logits = inputs.student_logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return p["ce_weight"] * F.cross_entropy(logits, inputs.labels)


def knowledge_distillation(inputs: TermInputs, p: dict):
    """kd_weight · T² · KL(teacher ‖ student) at temperature T (Hinton et al.)."""
    return p["kd_weight"] * losses.kd_loss(inputs.student_logits, inputs.teacher_logits,
                                           p["temperature"])


def decoupled_kd(inputs: TermInputs, p: dict):
    """dkd_weight · (α · TCKD + β · NCKD) (Zhao et al., CVPR 2022)."""
    value = losses.dkd_loss(inputs.student_logits, inputs.teacher_logits, inputs.labels,
                            alpha=p["alpha"], beta=p["beta"], temperature=p["temperature"])
    return value if p["dkd_weight"] == 1.0 else p["dkd_weight"] * value


class ContrastiveTerm(TermModule):
    """cl_weight · L_CKD, with the variants chosen by its parameters and, when
    ``learnable_temperature``, a trained τ (not weight-decayed, logged as ``tau``)."""

    def __init__(self, params: dict, context: TermContext):
        super().__init__(params)
        self.temperature = (losses.LearnableTemperature(init=params["temperature"])
                            if params["learnable_temperature"] else None)

    def tau(self):
        return self.params["temperature"] if self.temperature is None else self.temperature()

    def forward(self, inputs: TermInputs):
        p = self.params
        options = dict(temperature=self.tau(), negatives=p["negatives"],
                       symmetric=p["symmetric"], positive_only=p["positive_only"],
                       chunk_size=p["chunk_size"])
        if p["negatives_scope"] == "global":  # all-gather across DDP ranks (equal batches)
            value = losses.ckd_loss_distributed(inputs.student_logits, inputs.teacher_logits,
                                                "global", check_shapes=False, **options)
        else:
            value = losses.ckd_loss(inputs.student_logits, inputs.teacher_logits, **options)
        return p["cl_weight"] * value

    def param_groups(self, weight_decay: float) -> list[tuple[list, float]]:
        if self.temperature is None:
            return []
        return [(list(self.temperature.parameters()), 0.0)]

    def metrics(self) -> dict[str, float]:
        return {} if self.temperature is None else {"tau": float(self.temperature().detach())}


class ReviewTerm(TermModule):
    """reviewkd_weight · HCL(fused student features, teacher features). The connectors train
    with the student (weight-decayed, as mdistiller): stage features on classification
    (``ReviewKD.for_models``), the five FPN levels on detection (``FPNReviewKD``)."""

    def __init__(self, params: dict, context: TermContext):
        super().__init__(params)
        self.detection = context.task == "detection"
        self.review = (losses.FPNReviewKD() if self.detection
                       else losses.ReviewKD.for_models(context.student, context.teacher))

    def forward(self, inputs: TermInputs):
        if self.detection:
            value = losses.hcl_loss(self.review(inputs.student_features),
                                    inputs.teacher_features)
        else:
            fused = self.review(losses.reviewkd_features(inputs.student_features))
            value = losses.hcl_loss(fused, losses.reviewkd_features(inputs.teacher_features,
                                                                    preact=True))
        return self.params["reviewkd_weight"] * value


def _check_ckd(p: dict) -> None:
    """The combinations ckd_loss refuses (positive_only with negatives), before a run starts."""
    from ckd_lib.losses.ckd import check_ckd_options

    check_ckd_options(p["negatives"], p["symmetric"], p["positive_only"], p["chunk_size"])


def _weight(name: str, default: float, what: str) -> Param:
    return Param(name, float, default, f"weight of {what}")


register_term("ce", params=[_weight("ce_weight", 1.0, "the cross-entropy with the labels")],
              needs=["labels"], tasks=["classification"], compute=cross_entropy,
              help="cross-entropy of the student with the labels")
register_term("kd", params=[_weight("kd_weight", 1.0, "the KD term"),
                            Param("temperature", float, 4.0, "softmax temperature T",
                                  positive=True)],
              needs=["teacher_logits"], compute=knowledge_distillation,
              help="Hinton's KD: T² · KL(teacher ‖ student)")
register_term("dkd", params=[_weight("dkd_weight", 1.0, "the DKD term"),
                             Param("alpha", float, 1.0, "weight of TCKD"),
                             Param("beta", float, 8.0, "weight of NCKD"),
                             Param("temperature", float, 4.0, "softmax temperature T",
                                   positive=True)],
              needs=["teacher_logits", "labels"], compute=decoupled_kd,
              help="decoupled KD: α · TCKD + β · NCKD")
register_term("ckd", params=[
    _weight("cl_weight", 10.0, "the contrastive term"),
    Param("temperature", float, 1.0, "τ of the contrastive softmax (its initial value when "
          "learnable)", positive=True),
    Param("negatives", str, "teacher", "negatives: other samples' teacher or student logits",
          choices=tuple(losses.CKD_NEGATIVES)),
    Param("symmetric", bool, False, "contrast in both directions (CLIP-style)"),
    Param("positive_only", bool, False, "keep only the positive pairs (no contrast)"),
    Param("chunk_size", int, None, "contrast within chunks of this many samples",
          minimum=2, optional=True),
    Param("learnable_temperature", bool, False, "train τ with the student"),
    Param("negatives_scope", str, "local", "under DDP: each GPU's slice (local, the authors' "
          "DataParallel) or the global batch", choices=tuple(CKD_NEGATIVES_SCOPES)),
], needs=["teacher_logits"], module=ContrastiveTerm, check=_check_ckd,
    help="CKD: sample-wise contrast of logits")
register_term("reviewkd", params=[_weight("reviewkd_weight", 1.0, "ReviewKD's feature loss")],
              needs=["features"], module=ReviewTerm,
              help="ReviewKD: hierarchical context loss on fused features")

# -- classification methods (the report's order follows this order) ------------------------------
register_method("CE", ["ce"], main=True, color=PALETTE[7], help="the student alone")
register_method("KD", [use("ce", ce_weight=0.1), use("kd", kd_weight=0.9)], main=True,
                color=PALETTE[0])
register_method("DKD", ["ce", use("dkd", hide=["dkd_weight"])], warmup=["dkd"], main=True,
                color=PALETTE[2])
register_method("CKD", ["ce", "ckd"], main=True, color=PALETTE[3])
register_method("KD+CKD", [use("ce", ce_weight=0.1),
                           use("kd", rename={"temperature": "kd_temperature"}, kd_weight=0.9,
                               kd_temperature=4.0),
                           "ckd"], recipe_from="CKD", recipe_params=["cl_weight", "temperature"],
                color=PALETTE[5])
register_method("CKD+ReviewKD", ["ce", "ckd", "reviewkd"], warmup=["ckd", "reviewkd"],
                recipe_from="CKD", recipe_params=["ce_weight", "cl_weight", "temperature"],
                color=PALETTE[4])

# -- detection methods -----------------------------------------------------------------------------
_DET_KD = use("kd", rename={"temperature": "kd_temperature"}, kd_weight=1.0, kd_temperature=1.0)
_DET_DKD = use("dkd", beta=0.25, temperature=1.0)
_DET_CKD = use("ckd", rename={"cl_weight": "ckd_weight"}, ckd_weight=0.1,
               hide=["negatives", "symmetric", "positive_only", "chunk_size",
                     "learnable_temperature", "negatives_scope"])
_DETECTION = dict(task="detection")
register_method("baseline", [], color=PALETTE[7], help="the detector alone", **_DETECTION)
register_method("KD", [_DET_KD], **_DETECTION)
register_method("DKD", [_DET_DKD], **_DETECTION)
register_method("CKD", [_DET_CKD], **_DETECTION)
register_method("ReviewKD", ["reviewkd"], color=PALETTE[1], **_DETECTION)
# the logit term before ReviewKD: the loss dict (and the sum of the total) keep that order
register_method("ReviewKD+KD", [_DET_KD, "reviewkd"], color=PALETTE[9], **_DETECTION)
register_method("ReviewKD+DKD", [_DET_DKD, "reviewkd"], color=PALETTE[6], **_DETECTION)
register_method("ReviewKD+CKD", [_DET_CKD, "reviewkd"], color="#8c510a", **_DETECTION)
