"""Distillation inside a torchvision R-CNN: one training step's named losses.

What the CKD authors' detection code computes (their ``RCNNKD``, on Detectron2), rebuilt on
torchvision's modules with the same data flow:
1. The student runs its usual training forward: resize/normalise/batch, backbone + FPN, RPN,
   the proposal sampler of the RoI head (512 proposals per image, 25 % positive), the box head,
   and Faster (and Mask) R-CNN's own losses.
2. The teacher sees the *same* resized batch, normalised with its own statistics (a converted
   Detectron2 teacher expects BGR 0-255 input, a torchvision one RGB 0-1), and runs its backbone
   + FPN under no_grad.
3. The student's *sampled* proposals (after the sampler, before any NMS) are pooled from the
   teacher's FPN and passed through the teacher's box head and predictor, so teacher and student
   class logits (``num_classes`` = 81-way) refer to the same boxes, row for row.
4. Method losses on those logits: CKD (``ckd_loss`` over all sampled proposals of the batch as
   one contrast set), DKD (targets = the sampled proposals' labels, background included), KD;
   ReviewKD on the five FPN levels (``FPNReviewKD`` + ``hcl_loss``); or their sums.
The authors apply no warm-up to these terms on detection, and neither do we.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss

from ckd_lib.losses import ABF, ckd_loss, dkd_loss, hcl_loss, kd_loss

__all__ = [
    "DETECTION_METHODS",
    "DEFAULT_LOSS_PARAMS",
    "DetectionDistiller",
    "FPNReviewKD",
    "method_terms",
    "renormalise",
]

# The detector alone ("baseline"), each logit method, ReviewKD alone and the paper's sums.
DETECTION_METHODS = ("baseline", "KD", "DKD", "CKD", "ReviewKD", "ReviewKD+KD", "ReviewKD+DKD",
                     "ReviewKD+CKD")
# Defaults per loss term; a recipe's loss_params override them (recipes.csv: ckd_weight 0.1 and
# tau 1; DKD alpha 1, beta 0.25, T 1; reviewkd_weight per pair). KD's weight and temperature on
# detection are not published with the paper: 1.0 and 1 are this project's choice.
DEFAULT_LOSS_PARAMS = {
    "CKD": {"ckd_weight": 0.1, "temperature": 1.0},
    "DKD": {"dkd_weight": 1.0, "alpha": 1.0, "beta": 0.25, "temperature": 1.0},
    "KD": {"kd_weight": 1.0, "kd_temperature": 1.0},
    "ReviewKD": {"reviewkd_weight": 1.0},
}
# Recipe keys that only describe where a loss applies (kept in the record, not used here).
_DESCRIPTIVE_KEYS = {"applied_to"}


def method_terms(method: str) -> tuple[str, ...]:
    """The loss terms of a method name: "ReviewKD+CKD" -> ("ReviewKD", "CKD")."""
    if method not in DETECTION_METHODS:
        raise ValueError(f"detection method {method!r} is not one of "
                         f"{', '.join(DETECTION_METHODS)}")
    return () if method == "baseline" else tuple(method.split("+"))


def resolve_loss_params(method: str, given: Mapping | None = None) -> dict:
    """Defaults of the method's terms updated by ``given``; unknown keys raise."""
    params: dict = {}
    for term in method_terms(method):
        params.update(DEFAULT_LOSS_PARAMS[term])
    given = dict(given or {})
    unknown = sorted(set(given) - set(params) - _DESCRIPTIVE_KEYS)
    if unknown:
        raise ValueError(f"loss parameters {unknown} do not apply to detection method "
                         f"{method!r}; accepted: {sorted(params)}")
    params.update({k: v for k, v in given.items() if k not in _DESCRIPTIVE_KEYS})
    return params


class FPNReviewKD(nn.Module):
    """ReviewKD connectors between two FPNs (the authors' detection ``build_kd_trans``).

    All levels have ``channels`` channels (FPN's 256) in student and teacher alike, and since
    both see the same batch, each student level has its teacher level's spatial size; the sizes
    change from batch to batch (multi-scale training), so unlike the classification ``ReviewKD``
    nothing here is fixed at construction. Levels run shallow (P2) to deep (P6); fusion goes from
    the deepest level up, each ABF resizing the deeper residual to its own level.
    """

    def __init__(self, num_levels: int = 5, channels: int = 256, mid_channel: int = 256) -> None:
        super().__init__()
        self.abfs = nn.ModuleList(ABF(channels, mid_channel, channels, fuse=i < num_levels - 1)
                                  for i in range(num_levels))

    def forward(self, student_levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(student_levels) != len(self.abfs):
            raise ValueError(f"FPNReviewKD: expected {len(self.abfs)} FPN levels, got "
                             f"{len(student_levels)}")
        out: list[torch.Tensor] = []
        residual = None
        for idx in range(len(self.abfs) - 1, -1, -1):
            level = student_levels[idx]
            fused, residual = self.abfs[idx](level, residual, tuple(level.shape[-2:]))
            out.append(fused)
        return out[::-1]


def renormalise(batch: ImageList, from_mean: Sequence[float], from_std: Sequence[float],
                to_mean: Sequence[float], to_std: Sequence[float]) -> torch.Tensor:
    """The batch as a model with other input statistics sees it, padding kept at zero.

    ``batch`` holds images normalised as ``(x - from_mean) / from_std`` and zero-padded; the
    result is ``(x - to_mean) / to_std`` inside each image and zero in its padding, i.e. what
    normalising with the other statistics *before* padding gives. Equal statistics return the
    tensor itself (bit-exact).
    """
    if tuple(from_mean) == tuple(to_mean) and tuple(from_std) == tuple(to_std):
        return batch.tensors
    x = batch.tensors

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    scale = column(from_std) / column(to_std)
    shift = (column(from_mean) - column(to_mean)) / column(to_std)
    out = x * scale + shift
    valid = torch.zeros((x.shape[0], 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
    for i, (h, w) in enumerate(batch.image_sizes):
        valid[i, :, :h, :w] = 1
    return out * valid


class DetectionDistiller(nn.Module):
    """A student detector, a frozen teacher and the method's losses; ``forward`` -> loss dict.

    ``forward(images, targets)`` takes what torchvision's detectors take in training (a list of
    [3, H, W] RGB images in [0, 1] and target dicts) and returns named losses: the detector's
    own (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``,
    ``loss_mask`` for Mask R-CNN) and the method's, already weighted (``loss_ckd``, ``loss_dkd``,
    ``loss_kd``, ``loss_reviewkd``). The total is their sum. Trainable parameters: the student's
    and, for ReviewKD, the connectors'. The teacher stays in eval mode with gradients off.
    ``last_logits`` holds the latest (student, teacher) RoI logits and the sampled proposals, for
    tests and diagnostics. ``amp_dtype`` (e.g. bf16) runs the backbones and FPNs under
    autocast; heads, box coding and losses stay float32.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 method: str = "baseline", loss_params: Mapping | None = None,
                 amp_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.method = method
        self.terms = method_terms(method)
        self.params = resolve_loss_params(method, loss_params)
        if self.terms and teacher is None:
            raise ValueError(f"detection method {method!r} needs a teacher")
        self.student = student
        # Kept out of the module tree: not trained, not in DDP's buckets, not in checkpoints.
        self.__dict__["teacher"] = teacher
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            if teacher.spec.num_classes != student.spec.num_classes:
                raise ValueError(f"teacher predicts {teacher.spec.num_classes} classes, student "
                                 f"{student.spec.num_classes}; they must share a label space")
        self.reviewkd = FPNReviewKD() if "ReviewKD" in self.terms else None
        self.last_logits: dict[str, object] = {}
        self.amp_dtype = amp_dtype

    def _backbone(self, model: nn.Module, x: torch.Tensor) -> OrderedDict:
        if self.amp_dtype is None:
            return model.backbone(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            levels = model.backbone(x)
        return OrderedDict((k, v.float()) for k, v in levels.items())

    def train(self, mode: bool = True) -> DetectionDistiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def to(self, *args, **kwargs) -> DetectionDistiller:
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        if not self.training:
            raise RuntimeError("DetectionDistiller computes training losses; evaluate the "
                               "student itself (distiller.student) in eval mode")
        student = self.student
        batch, targets = student.transform(images, targets)
        features = self._backbone(student, batch.tensors)
        proposals, losses = student.rpn(batch, features, targets)
        losses = dict(losses)
        heads = student.roi_heads
        proposals, matched_idxs, labels, regression_targets = heads.select_training_samples(
            proposals, targets)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, batch.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                      regression_targets)
        losses["loss_classifier"] = loss_classifier
        losses["loss_box_reg"] = loss_box_reg
        if heads.has_mask():
            losses["loss_mask"] = self._mask_loss(features, proposals, matched_idxs, labels,
                                                  targets, batch.image_sizes)
        if self.terms:
            losses.update(self._distillation(batch, features, proposals, class_logits,
                                             torch.cat(labels)))
        return losses

    def _mask_loss(self, features, proposals, matched_idxs, labels, targets, image_sizes):
        """Mask R-CNN's loss on the positive sampled proposals (as torchvision's RoIHeads)."""
        heads = self.student.roi_heads
        positive = [torch.where(lab > 0)[0] for lab in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positive, strict=True)]
        positive_matches = [m[i] for m, i in zip(matched_idxs, positive, strict=True)]
        mask_logits = heads.mask_predictor(heads.mask_head(
            heads.mask_roi_pool(features, mask_proposals, image_sizes)))
        return maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                             [t["labels"] for t in targets], positive_matches)

    def _distillation(self, batch: ImageList, features, proposals, class_logits: torch.Tensor,
                      proposal_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        teacher = self.teacher
        s_spec, t_spec = self.student.spec, teacher.spec
        needs_logits = any(t in self.terms for t in ("CKD", "DKD", "KD"))
        with torch.no_grad():
            teacher_input = renormalise(batch, s_spec.image_mean, s_spec.image_std,
                                        t_spec.image_mean, t_spec.image_std)
            t_features = self._backbone(teacher, teacher_input)
            t_logits = None
            if needs_logits:
                t_heads = teacher.roi_heads
                pooled = t_heads.box_roi_pool(t_features, proposals, batch.image_sizes)
                t_logits, _ = t_heads.box_predictor(t_heads.box_head(pooled))
        self.last_logits = {"student": class_logits.detach(), "teacher": t_logits,
                            "proposals": [p.detach() for p in proposals]}
        p = self.params
        out: dict[str, torch.Tensor] = {}
        if "CKD" in self.terms:
            out["loss_ckd"] = p["ckd_weight"] * ckd_loss(class_logits, t_logits,
                                                         temperature=p["temperature"])
        if "DKD" in self.terms:
            out["loss_dkd"] = p["dkd_weight"] * dkd_loss(class_logits, t_logits, proposal_labels,
                                                         alpha=p["alpha"], beta=p["beta"],
                                                         temperature=p["temperature"])
        if "KD" in self.terms:
            out["loss_kd"] = p["kd_weight"] * kd_loss(class_logits, t_logits,
                                                      temperature=p["kd_temperature"])
        if "ReviewKD" in self.terms:
            fused = self.reviewkd(list(features.values()))
            out["loss_reviewkd"] = p["reviewkd_weight"] * hcl_loss(fused,
                                                                   list(t_features.values()))
        return out
