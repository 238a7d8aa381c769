"""Detectors for the COCO table: torchvision Faster R-CNN / Mask R-CNN with an FPN.

Why torchvision and not Detectron2 (which the authors use): Detectron2 has no installable wheels.
The detectors here are torchvision's own ``FasterRCNN`` / ``MaskRCNN`` classes, built with the
backbones the paper pairs (ResNet18, ResNet50, ResNet101 students and teachers, MobileNetV2
student), so torchvision's COCO weights load into them and their state-dict keys are torchvision's.

Everything that shapes a detector lives in one ``DetectorSpec``. It is stored in every checkpoint
this project writes, so a checkpoint rebuilds its own model (``load_detector``), and it carries the
few switches that a Detectron2-converted teacher needs to compute what it computed in Detectron2
(stride in the 1x1 conv of the bottleneck, RoIAlign with ``aligned=True`` and adaptive sampling,
BGR 0-255 input statistics); see ``ckd_lib.detection.convert``.

Label space: ``num_classes`` includes the background at index 0; COCO's 80 categories are labels
1..80 in ascending category-id order (Detectron2's order, with the background moved first).
torchvision's own COCO weights predict 91 rows indexed by raw category id; ``coco91_to_81``
keeps the 81 that exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import _filter_input, _setup_scales

from ckd_lib.errors import InputError, MissingFileError
from ckd_lib.fields import check_known_fields, plain_dict
from ckd_lib.models.checkpoint import read_checkpoint

__all__ = [
    "COCO_CATEGORY_IDS",
    "DETECTION_BACKBONES",
    "DETECTOR_KINDS",
    "AlignedMultiScaleRoIAlign",
    "DetectorSpec",
    "SpecTransform",
    "build_detector",
    "coco91_to_81",
    "load_detector",
    "load_backbone_weights",
]

DETECTION_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
DETECTOR_KINDS = ("faster_rcnn", "mask_rcnn")
BACKBONE_NORMS = ("frozen_bn", "bn")
# torchvision's (and ImageNet's) RGB statistics on images scaled to [0, 1].
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
# Detectron2's multi-scale training sizes and its test size (the paper's recipe).
TRAIN_MIN_SIZES = (640, 672, 704, 736, 768, 800)
TEST_MIN_SIZE = 800
MAX_SIZE = 1333
# The 80 COCO 2017 category ids, ascending: label k (1..80) is COCO_CATEGORY_IDS[k - 1].
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91)
                          if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
# MobileNetV2 ``features`` indices whose outputs have strides 4, 8, 16 and 32.
_MOBILENET_V2_LEVELS = {"3": "0", "6": "1", "13": "2", "18": "3"}
_MOBILENET_V2_CHANNELS = [24, 32, 96, 1280]


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild a detector (stored in its checkpoints).

    ``train_min_sizes``: shorter sides drawn per batch in training (torchvision's transform picks
    one at random, as Detectron2's ResizeShortestEdge does); evaluation resizes to
    ``test_min_size``. ``trainable_layers``: backbone stages left trainable (3 = Detectron2's
    FREEZE_AT 2: stem and first stage frozen). BatchNorm in the backbone is frozen, as in
    Detectron2's FrozenBN. ``rpn_post_nms_top_n_train``: proposals kept per image after the
    RPN's NMS in training; Detectron2's FPN recipes (the paper's) keep 1000, torchvision 2000.
    ``roi_batch_per_image``: proposals the RoI head samples per training image (512 in both;
    smaller only for CPU demos). ``backbone_norm``: "frozen_bn" for a pretrained backbone
    (Detectron2 and torchvision alike); "bn" (trainable BatchNorm, torchvision's choice) when a
    backbone is trained from scratch, where identity-initialised frozen BN lets activations grow
    layer by layer and training diverges.
    """

    backbone: str
    kind: str = "faster_rcnn"
    num_classes: int = 81
    train_min_sizes: tuple[int, ...] = TRAIN_MIN_SIZES
    test_min_size: int = TEST_MIN_SIZE
    max_size: int = MAX_SIZE
    trainable_layers: int = 3
    image_mean: tuple[float, float, float] = TORCHVISION_MEAN
    image_std: tuple[float, float, float] = TORCHVISION_STD
    stride_in_1x1: bool = False
    roi_align_aligned: bool = False
    roi_sampling_ratio: int = 2
    rpn_post_nms_top_n_train: int = 1000
    roi_batch_per_image: int = 512
    backbone_norm: str = "frozen_bn"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in DETECTION_BACKBONES:
            raise ValueError(f"detector backbone {self.backbone!r} is not one of "
                             f"{', '.join(DETECTION_BACKBONES)}")
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"detector kind {self.kind!r} is not one of "
                             f"{', '.join(DETECTOR_KINDS)}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included); got "
                             f"{self.num_classes!r}")
        if not self.train_min_sizes or any(int(s) <= 0 for s in self.train_min_sizes):
            raise ValueError(f"train_min_sizes must be positive ints; got "
                             f"{self.train_min_sizes!r}")
        if self.backbone_norm not in BACKBONE_NORMS:
            raise ValueError(f"backbone_norm {self.backbone_norm!r} is not one of "
                             f"{', '.join(BACKBONE_NORMS)}")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5; got {self.trainable_layers!r}")
        if self.stride_in_1x1 and self.backbone not in ("resnet50", "resnet101"):
            raise ValueError("stride_in_1x1 applies to bottleneck ResNets (resnet50, resnet101) "
                             f"only; got backbone {self.backbone!r}")
        for name in ("test_min_size", "max_size", "rpn_post_nms_top_n_train",
                     "roi_batch_per_image"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not isinstance(self.roi_sampling_ratio, int) or self.roi_sampling_ratio < 0:
            raise ValueError(f"roi_sampling_ratio must be an int >= 0 (0 = adaptive); got "
                             f"{self.roi_sampling_ratio!r}")
        object.__setattr__(self, "train_min_sizes", tuple(int(s) for s in self.train_min_sizes))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))

    def to_dict(self) -> dict:
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> DetectorSpec:
        check_known_fields(cls, data, "DetectorSpec fields")
        values = dict(data)
        for key in ("train_min_sizes", "image_mean", "image_std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes) -> DetectorSpec:
        return dataclasses.replace(self, **changes)


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """FPN RoIAlign with ``aligned=True`` (Detectron2's ROIAlignV2), which torchvision lacks.

    torchvision's pooler samples with the legacy half-pixel offset (``aligned=False``); a teacher
    trained in Detectron2 expects the aligned version, so a converted teacher uses this pooler.
    Level assignment is torchvision's (the same FPN heuristic as Detectron2's).
    """

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        levels_in = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                levels_in, image_shapes, self.canonical_scale, self.canonical_level)
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                          for i, b in enumerate(boxes)], dim=0)
        level_of = self.map_levels(boxes)
        first = levels_in[0]
        out = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(levels_in, self.scales, strict=True)):
            index = torch.where(level_of == level)[0]
            pooled = roi_align(feature, rois[index], output_size=self.output_size,
                               spatial_scale=scale, sampling_ratio=self.sampling_ratio,
                               aligned=True)
            out.index_put_((index,), pooled.to(out.dtype))
        return out


def _move_stride_to_1x1(resnet: torchvision.models.ResNet) -> None:
    """MSRA-style bottlenecks: the stride-2 of a stage's first block sits on its 1x1 conv.

    Detectron2's ImageNet-pretrained R50/R101 ("R-50.pkl", "R-101.pkl", MSRA weights) are built
    this way (RESNETS.STRIDE_IN_1X1=True); torchvision puts the stride on the 3x3 conv. Same
    parameters and shapes, different arithmetic, so a converted teacher must be rebuilt this way.
    """
    for stage in (resnet.layer2, resnet.layer3, resnet.layer4):
        block = stage[0]
        block.conv1.stride = (2, 2)
        block.conv2.stride = (1, 1)


def _resnet_backbone(spec: DetectorSpec, norm_layer) -> BackboneWithFPN:
    resnet = getattr(torchvision.models, spec.backbone)(weights=None, norm_layer=norm_layer)
    if spec.stride_in_1x1:
        _move_stride_to_1x1(resnet)
    return _resnet_fpn_extractor(resnet, spec.trainable_layers)


def _mobilenet_v2_backbone(spec: DetectorSpec, norm_layer) -> BackboneWithFPN:
    """MobileNetV2 (width 1.0) with an FPN on its stride-4/8/16/32 outputs.

    torchvision's ``mobilenet_backbone`` finds stages through a MobileNetV3-only attribute, so
    the four levels are named here: ``features[3]`` (24 ch), ``[6]`` (32), ``[13]`` (96) and
    the last 1x1 conv ``[18]`` (1280). ``trainable_layers`` counts levels from the deepest as
    for ResNets (3 freezes the stem and the stride-4 level).
    """
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer)
    features = net.features
    boundaries = [0, 4, 7, 14, 19]  # level k = features[boundaries[k]:boundaries[k + 1]]
    frozen_levels = 4 - min(spec.trainable_layers, 4)
    for index in range(boundaries[frozen_levels]):
        for p in features[index].parameters():
            p.requires_grad_(False)
    return BackboneWithFPN(features, dict(_MOBILENET_V2_LEVELS), list(_MOBILENET_V2_CHANNELS),
                           out_channels=256, extra_blocks=LastLevelMaxPool(),
                           norm_layer=None)


def _pooler(spec: DetectorSpec, output_size: int) -> MultiScaleRoIAlign:
    cls = AlignedMultiScaleRoIAlign if spec.roi_align_aligned else MultiScaleRoIAlign
    return cls(featmap_names=["0", "1", "2", "3"], output_size=output_size,
               sampling_ratio=spec.roi_sampling_ratio)


def build_detector(spec: DetectorSpec | str, **overrides) -> FasterRCNN:
    """A randomly initialised detector (heads as torchvision initialises them) for ``spec``.

    ``spec`` may be a backbone name; ``overrides`` set other ``DetectorSpec`` fields. The model
    gets a ``spec`` attribute. Load weights with ``load_backbone_weights`` (an ImageNet
    classifier's) or ``load_state_dict`` / ``load_detector`` (a whole detector's).
    """
    if isinstance(spec, str):
        spec = DetectorSpec(backbone=spec, **overrides)
    elif overrides:
        spec = spec.replace(**overrides)
    norm_layer = FrozenBatchNorm2d if spec.backbone_norm == "frozen_bn" else nn.BatchNorm2d
    if spec.backbone == "mobilenet_v2":
        backbone = _mobilenet_v2_backbone(spec, norm_layer)
    else:
        backbone = _resnet_backbone(spec, norm_layer)
    common = dict(num_classes=spec.num_classes, min_size=spec.train_min_sizes,
                  max_size=spec.max_size, image_mean=list(spec.image_mean),
                  image_std=list(spec.image_std), box_roi_pool=_pooler(spec, 7),
                  rpn_post_nms_top_n_train=spec.rpn_post_nms_top_n_train,
                  box_batch_size_per_image=spec.roi_batch_per_image)
    if spec.kind == "mask_rcnn":
        model = MaskRCNN(backbone, mask_roi_pool=_pooler(spec, 14), **common)
    else:
        model = FasterRCNN(backbone, **common)
    model.transform = SpecTransform(spec)
    model.spec = spec
    return model


class SpecTransform(GeneralizedRCNNTransform):
    """torchvision's resize/normalise/batch step, with separate training and test sizes.

    torchvision draws the training shorter side from ``min_size`` and tests at ``min_size[-1]``;
    Detectron2 draws from its training sizes and tests at its own size (800). Here the training
    draw uses ``spec.train_min_sizes`` only and ``min_size[-1]`` is ``spec.test_min_size``.
    The draw uses torch's global generator, so a seeded step repeats exactly.
    """

    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__(min_size=(*spec.train_min_sizes, spec.test_min_size),
                         max_size=spec.max_size, image_mean=list(spec.image_mean),
                         image_std=list(spec.image_std))
        self.train_min_sizes = tuple(spec.train_min_sizes)

    def torch_choice(self, k: list[int]) -> int:
        index = int(torch.empty(1).uniform_(0.0, float(len(self.train_min_sizes))).item())
        return self.train_min_sizes[index]


def load_backbone_weights(model: FasterRCNN, source: str | Path | Mapping) -> list[str]:
    """Initialise the detector's backbone body from an ImageNet classifier's weights.

    ``source``: ``"imagenet"`` (torchvision's IMAGENET1K_V1 weights for the spec's backbone;
    downloads into the torch hub cache), a checkpoint path (a state dict, or a dict with a
    ``model`` entry, as this project's classification runs write) or a state dict. The
    classifier's ``fc``/``classifier`` weights are dropped; everything else must match the body
    exactly (a missing or mis-shaped key raises). Returns the dropped keys.
    """
    spec: DetectorSpec = model.spec
    if isinstance(source, str) and source == "imagenet":
        weights = torchvision.models.get_model_weights(spec.backbone).IMAGENET1K_V1
        state = weights.get_state_dict(progress=False)
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise MissingFileError(f"backbone weights {str(path)!r} not found (give a "
                                   "checkpoint file, a state dict, or 'imagenet')")
        state = read_checkpoint(path)
        state = state.get("model", state) if isinstance(state, Mapping) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    body = model.backbone.body
    if spec.backbone == "mobilenet_v2":
        dropped = sorted(k for k in state if not k.startswith("features."))
        state = {k.removeprefix("features."): v for k, v in state.items()
                 if k.startswith("features.")}
    else:
        dropped = sorted(k for k in state if k.startswith("fc."))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    wanted = body.state_dict()
    # FrozenBatchNorm2d has no num_batches_tracked; the classifier's BN does.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    mismatched = sorted(k for k in set(wanted) & set(state) if wanted[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise InputError(
            f"backbone weights do not fit {spec.backbone}: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, mis-shaped {mismatched[:8]}")
    body.load_state_dict(state, strict=True)
    return dropped


def coco91_to_81(state: Mapping[str, torch.Tensor],
                 category_ids: Sequence[int] = COCO_CATEGORY_IDS) -> dict[str, torch.Tensor]:
    """Keep the background row and the rows of ``category_ids`` of a torchvision COCO predictor.

    torchvision's COCO detectors index their class rows by raw COCO category id (91 rows, ten of
    them unused); ours put category ``category_ids[k - 1]`` at row k. Applies to the class
    scores, the class-specific box deltas (4 rows per class) and Mask R-CNN's mask logits.
    """
    rows = torch.tensor([0, *category_ids])
    out = dict(state)
    for key in list(out):
        value = out[key]
        if key.startswith("roi_heads.box_predictor.cls_score."):
            out[key] = value[rows]
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            out[key] = value.reshape(-1, 4, *value.shape[1:])[rows].reshape(-1, *value.shape[1:])
        elif key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            out[key] = value[rows]
    return out


def load_detector(path: str | Path, map_location: str | torch.device = "cpu") -> FasterRCNN:
    """Rebuild a detector from a checkpoint this project wrote (``{"model", "spec"}``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"detector checkpoint {str(path)!r} not found")
    saved = read_checkpoint(path, map_location)
    if not isinstance(saved, Mapping) or "model" not in saved or "spec" not in saved:
        raise InputError(f"{path}: not a detector checkpoint of this project (needs 'model' and "
                         "'spec' entries; convert Detectron2 files with "
                         "`python -m ckd_lib.detection.convert`)")
    model = build_detector(DetectorSpec.from_dict(saved["spec"]))
    model.load_state_dict(saved["model"], strict=True)
    return model
