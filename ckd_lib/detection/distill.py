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
4. The method's terms (``ckd_lib.methods``, task "detection") on those logits: CKD
   (``ckd_loss`` over all sampled proposals of the batch as one contrast set), DKD (targets =
   the sampled proposals' labels, background included), KD; ReviewKD on the five FPN levels
   (``FPNReviewKD`` + ``hcl_loss``); their sums; or a plugin's term, which sees the same
   ``TermInputs`` (student and teacher logits of the sampled proposals, their labels, and the
   FPN levels as features).
The authors apply no warm-up to these terms on detection, and neither do we.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss

from ckd_lib.detection.config import DESCRIPTIVE_LOSS_KEYS
from ckd_lib.methods import TermContext, TermInputs, get_method
from ckd_lib.methods.contract import call_term, check_value

__all__ = ["DetectionDistiller", "renormalise"]


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
    ``loss_mask`` for Mask R-CNN) and the method's terms, already weighted (``loss_<term>``:
    ``loss_ckd``, ``loss_dkd``, ``loss_kd``, ``loss_reviewkd``). The total is their sum.
    Trainable parameters: the student's and its terms' (ReviewKD's connectors). The teacher
    stays in eval mode with gradients off.
    ``last_logits`` holds the latest (student, teacher) RoI logits and the sampled proposals, for
    tests and diagnostics. ``amp_dtype`` (e.g. bf16) runs the backbones and FPNs under
    autocast; heads, box coding and losses stay float32.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 method: str = "baseline", loss_params: Mapping | None = None,
                 amp_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.method = method
        spec = get_method(method, "detection")
        self.terms = spec.terms
        self.needs = spec.needs
        self.params = spec.resolve({k: v for k, v in (loss_params or {}).items()
                                    if k not in DESCRIPTIVE_LOSS_KEYS})
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
        self.parts = nn.ModuleDict(spec.build_terms(
            self.params, TermContext("detection", student, teacher)))
        self._registered = {use.term.name: use.term for use in spec.uses}
        self._checked = False
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
        needs_logits = "teacher_logits" in self.needs
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
        inputs = TermInputs(class_logits, t_logits, proposal_labels,
                            list(features.values()), list(t_features.values()))
        out = {}
        for name, part in self.parts.items():
            term = self._registered[name]
            out[f"loss_{name}"] = value = call_term(term, part, inputs)
            if not self._checked:  # the term's contract, on its first call
                check_value(term, value, inputs)
        self._checked = True
        return out
