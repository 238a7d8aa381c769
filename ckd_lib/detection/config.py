"""One detection run, described completely: ``DetectionConfig``.

A config is everything that decides what a run computes (data, models, method, loss
parameters, schedule, sizes, seed) plus execution options (device, bf16, workers, checkpoint and
log intervals). Its hash covers only the first kind, so moving a run to another GPU or changing
its logging does not make it a new run. ``validate`` checks names, ranges and files before any
model is built, so a typo fails in a second with the accepted values, not after hours.

Recipes: ``DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root=...)`` reads the
COCO rows of the project's recipes (``ckd_lib/resources/recipes.csv``; the teacher-training and
the methods the paper does not list are in ``recipes_derived.csv``, marked as derived).
``iterations=`` shortens or lengthens a schedule with its milestones scaled in proportion, which
is also how the matched-budget comparison (every method at the same iterations) is made.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib.detection.distill import DETECTION_METHODS, method_terms, resolve_loss_params
from ckd_lib.detection.models import (
    DETECTION_BACKBONES,
    DETECTOR_KINDS,
    MAX_SIZE,
    TEST_MIN_SIZE,
    TRAIN_MIN_SIZES,
    DetectorSpec,
)
from ckd_lib.fields import check_known_fields, plain_dict

__all__ = ["BACKBONE_ALIASES", "DetectionConfig", "parse_iteration_schedule"]

# The recipes' short names -> backbone names.
BACKBONE_ALIASES = {"R18": "resnet18", "R34": "resnet34", "R50": "resnet50", "R101": "resnet101",
                    "MobileNetV2": "mobilenet_v2", "MV2": "mobilenet_v2"}
AMP_MODES = ("bf16", "off")
# Where a teacher's weights come from: a checkpoint path, torchvision's COCO weights (R50 only),
# or "untrained" (tests and smoke runs only).
TEACHER_SOURCES = ("torchvision", "untrained")
_ITERS = re.compile(r"^(?P<iters>\d+)k_iters_steps(?P<steps>(_\d+k)+)$")

# Fields that do not change what a run computes (left out of the hash).
EXECUTION_FIELDS = ("device", "amp", "workers", "checkpoint_every", "log_every", "out_dir",
                    "progress", "eval_images_per_batch", "label")


def parse_iteration_schedule(text: str) -> tuple[int, tuple[int, ...]]:
    """``"360k_iters_steps_240k_320k"`` -> ``(360000, (240000, 320000))``."""
    match = _ITERS.match(text)
    if not match:
        raise ValueError(f"not an iteration schedule: {text!r} (expected e.g. "
                         "'360k_iters_steps_240k_320k')")
    steps = tuple(int(s[:-1]) * 1000 for s in match.group("steps").strip("_").split("_"))
    return int(match.group("iters")) * 1000, steps


def backbone_name(name: str) -> str:
    """A recipe alias or a backbone name -> the backbone name; unknown names raise."""
    if name in DETECTION_BACKBONES:
        return name
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]
    raise ValueError(f"unknown detection backbone {name!r}; accepted: "
                     f"{', '.join(DETECTION_BACKBONES)} or {', '.join(BACKBONE_ALIASES)}")


@dataclass
class DetectionConfig:
    """A COCO detection (or instance segmentation) run. See the module docstring."""

    data_root: str
    student: str
    method: str = "baseline"
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    kind: str = "faster_rcnn"
    student_weights: str | None = "imagenet"
    loss: dict = field(default_factory=dict)
    iterations: int = 90000
    milestones: tuple[int, ...] = (60000, 80000)
    lr: float = 0.02
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 1000
    warmup_factor: float = 0.001
    images_per_batch: int = 16
    train_min_sizes: tuple[int, ...] = TRAIN_MIN_SIZES
    test_min_size: int = TEST_MIN_SIZE
    max_size: int = MAX_SIZE
    roi_batch_per_image: int = 512
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_limit: int | None = None
    val_limit: int | None = None
    eval_every: int = 0
    seed: int = 0
    recipe: str = ""
    # execution options
    device: str = "auto"
    amp: str = "bf16"
    workers: int = 4
    checkpoint_every: int = 5000
    log_every: int = 20
    eval_images_per_batch: int = 4
    out_dir: str = "results/coco/runs"
    label: str = "coco"
    progress: bool = False

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.train_min_sizes = tuple(int(s) for s in self.train_min_sizes)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, teacher: str | None, student: str, method: str,
                    iterations: int | None = None, **overrides) -> DetectionConfig:
        """The recipe's schedule, lr, batch and loss parameters, then ``overrides``."""
        from ckd_lib.recipes import get_recipe

        recipe = get_recipe("coco", teacher, student, method)
        total, steps = parse_iteration_schedule(recipe.schedule_text)
        if iterations is not None:
            if iterations <= 0:
                raise ValueError(f"iterations must be positive; got {iterations!r}")
            steps = tuple(max(1, round(s * iterations / total)) for s in steps)
            if iterations < total:  # a shortened schedule warms up in proportion
                overrides.setdefault("warmup_iterations", max(
                    1, round(cls.warmup_iterations * iterations / total)))
            total = iterations
        values = dict(
            student=backbone_name(student),
            method="baseline" if recipe.method == "teacher" else recipe.method,
            teacher=backbone_name(teacher) if teacher else None, iterations=total,
            milestones=steps, lr=recipe.lr, images_per_batch=recipe.batch_size,
            weight_decay=recipe.weight_decay, loss=dict(recipe.loss_params),
            recipe=f"coco:{teacher or ''}:{student}:{method}",
        )
        if teacher and backbone_name(teacher) == "resnet50":
            values["teacher_checkpoint"] = "torchvision"
        values.update(overrides)
        return cls(**values)

    # -- validation -------------------------------------------------------------------------
    def validate(self, check_files: bool = True) -> DetectionConfig:
        """Raise a ValueError (FileNotFoundError for files) naming the bad value; returns self."""
        self.student = backbone_name(self.student)
        if self.teacher is not None:
            self.teacher = backbone_name(self.teacher)
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
        if self.method not in DETECTION_METHODS:
            raise ValueError(f"method {self.method!r} is not one of "
                             f"{', '.join(DETECTION_METHODS)}")
        if method_terms(self.method) and self.teacher is None:
            raise ValueError(f"method {self.method!r} needs a teacher (one of "
                             f"{', '.join(DETECTION_BACKBONES)})")
        if method_terms(self.method) and check_files and not self.teacher_checkpoint:
            raise ValueError(f"method {self.method!r} needs teacher_checkpoint (a file, or one "
                             f"of {TEACHER_SOURCES})")
        if not method_terms(self.method) and self.teacher is not None:
            raise ValueError("method 'baseline' trains the detector alone; set teacher=None")
        resolve_loss_params(self.method, self.loss)
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp {self.amp!r} is not one of {', '.join(AMP_MODES)}")
        for name in ("iterations", "images_per_batch", "warmup_iterations", "checkpoint_every",
                     "log_every", "eval_images_per_batch", "test_min_size", "max_size",
                     "roi_batch_per_image"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (
                    value == 0 and name != "warmup_iterations"):
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if list(self.milestones) != sorted(self.milestones) or any(
                not 0 < m <= self.iterations for m in self.milestones):
            raise ValueError(f"milestones must be increasing and within 1..iterations "
                             f"({self.iterations}); got {list(self.milestones)}")
        if not self.lr > 0 or not 0 <= self.warmup_factor <= 1:
            raise ValueError(f"lr must be > 0 and warmup_factor in [0, 1]; got lr={self.lr!r}, "
                             f"warmup_factor={self.warmup_factor!r}")
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be None or a positive int; got {value!r}")
        if self.student_weights not in (None, "imagenet") and check_files \
                and not Path(self.student_weights).is_file():
            raise FileNotFoundError(f"student_weights {self.student_weights!r} is not a file "
                                    "(give a classifier checkpoint, 'imagenet' or None)")
        if self.teacher_checkpoint not in (None, *TEACHER_SOURCES):
            if check_files and not Path(self.teacher_checkpoint).is_file():
                raise FileNotFoundError(
                    f"teacher_checkpoint {self.teacher_checkpoint!r} is not a file (give a "
                    f"detector checkpoint, e.g. one converted from Detectron2 with `python -m "
                    f"ckd_lib.detection.convert`, or one of {TEACHER_SOURCES})")
        elif self.teacher_checkpoint == "torchvision" and self.teacher != "resnet50":
            raise ValueError(f"torchvision publishes COCO weights for resnet50 detectors only; "
                             f"teacher {self.teacher!r} needs a checkpoint file")
        if check_files:
            from ckd_lib.detection.coco import check_coco_root

            check_coco_root(self.data_root, splits=(self.train_split, self.val_split))
        return self

    # -- identity ---------------------------------------------------------------------------
    def student_spec(self, num_classes: int) -> DetectorSpec:
        """The student's detector; trained from scratch (no student_weights) its backbone gets
        trainable BatchNorm and no frozen stages, as torchvision does without weights."""
        scratch = self.student_weights is None
        return DetectorSpec(backbone=self.student, kind=self.kind, num_classes=num_classes,
                            backbone_norm="bn" if scratch else "frozen_bn",
                            trainable_layers=5 if scratch else 3,
                            train_min_sizes=self.train_min_sizes,
                            test_min_size=self.test_min_size, max_size=self.max_size,
                            roi_batch_per_image=self.roi_batch_per_image)

    def to_dict(self) -> dict:
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DetectionConfig:
        check_known_fields(cls, data, "DetectionConfig fields")
        return cls(**data)

    def config_hash(self) -> str:
        content = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        content["loss"] = resolve_loss_params(self.method, self.loss)
        content["data_root"] = str(Path(self.data_root).resolve())
        for key in ("lr", "gamma", "momentum", "weight_decay", "warmup_factor"):
            content[key] = float(content[key])
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run_id(self) -> str:
        pair = f"{self.teacher}-{self.student}" if self.teacher else self.student
        kind = "mask" if self.kind == "mask_rcnn" else "faster"
        method = self.method.replace("+", "_")
        return (f"coco-{kind}-{pair}-{method}-{self.iterations}it-s{self.seed}-"
                f"{self.config_hash()[:6]}")
